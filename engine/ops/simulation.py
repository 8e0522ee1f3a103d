"""A day at a bank: the demo's simulated traffic, plausible and deterministic for a seed.

Customers (engine/ops/daylife.py) live in a home region, go to work and their usual
places, travel now and then, and bank in sessions: a mobile login, a balance check, a
card payment; an ATM visit with perhaps one mistyped PIN; an internet banking bill
payment. Each uses its own devices and channels and its usual amounts, never twice
within ``session_gap_s`` (an ATM at most every four hours), and their located events
(ATM, mobile) are where the customer is at that moment. A small ``fraud_share`` of
sessions is a planted fraud scenario instead, the alerts a bank's desk should see:

- ``card_skimming``: the customer uses an ATM with a skimmer (a watch-listed terminal);
  within an hour or two the cloned card is cashed out at three or four terminals in a row,
  in the same city or far away;
- ``account_takeover``: a device never seen before logs in, resets the password and
  sends large transfers to a new payee;
- ``mule``: two deposits just under the 10,000 reporting threshold, then five or six
  transfers out to new payees within the hour.

Customers also answer offers and convert (engine/ops/responses.py) once the bank's
decisions are fed back with :meth:`Simulation.observe`. ``planted_customers`` and
``planted_events`` say what was planted, so a test can tell which alerts were meant.

>>> sim = Simulation(Town(200, seed=1), seed=2)
>>> events = [sim.next_event(1796300000.0 + i * 30) for i in range(50)]
>>> {e["channel"] for e in events} <= {"atm", "internet", "mobile", "branch"}
True
>>> sim.tally.valid
50
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import Counter
from collections.abc import Mapping
from typing import Any

from engine.ops.daylife import ABROAD, REGIONS, Customer, Town, Whereabouts, _near, where
from engine.ops.responses import Responses
from engine.ops.traffic import Tally

SCENARIOS = ("card_skimming", "account_takeover", "mule")
# Watch-listed terminals of the starter pack's risk rules (rules/risk.yaml): skimmers.
SKIMMED = {"london": "ATM-LON-013", "manchester": "ATM-MAN-027"}
_SESSION = {
    "mobile": (("balance_inquiry", 0.7), ("card_payment", 0.2), ("transfer", 0.15), ("bill_payment", 0.1),
               ("page_view", 0.3)),
    "internet": (("page_view", 0.8), ("bill_payment", 0.3), ("transfer", 0.2), ("product_view", 0.25)),
}  # fmt: skip
Step = tuple[float, str, str, dict[str, Any]]  # (seconds after the start, channel, type, fields)


class Simulation:
    def __init__(
        self,
        town: Town,
        seed: int = 11,
        id_prefix: str = "sim",
        fraud_share: float = 0.003,
        complaint_share: float = 0.002,
        session_gap_s: float = 1800.0,
        responses: Responses | None = None,
        opening: tuple[str, ...] = (),
    ) -> None:
        self.town = town
        self.rng = random.Random(seed)
        self.id_prefix = id_prefix
        self.fraud_share = fraud_share
        self.complaint_share = complaint_share
        self.session_gap_s = session_gap_s
        self.responses = responses or Responses(seed, id_prefix)
        self.tally = Tally()
        self.sessions: Counter[str] = Counter()  # genuine sessions by channel, scenarios by kind
        self.planted_customers: dict[str, str] = {}
        self.planted_events: set[str] = set()
        self._seq = itertools.count()
        self._due: list[tuple[float, int, Any]] = []  # (when, order, step or ready event)
        self._free: dict[str, float] = {}  # a customer's next session not before
        self._atm: dict[str, float] = {}  # nor the next ATM visit
        # Scenario kinds the first sessions are (the demo: a new user sees alerts within
        # minutes rather than whenever the share first comes up), each on a customer it fits.
        self._opening = list(opening)

    # ------------------------------------------------------------------ the driver

    def next_event(self, ts: float) -> dict[str, Any]:
        """One valid event at time ``ts``: a due step of a session, scenario or answer, or
        the first of a new session."""
        while True:
            if self._due and self._due[0][0] <= ts:
                _, _, item = heapq.heappop(self._due)
                if isinstance(item, dict):
                    event: dict[str, Any] | None = item
                else:
                    c, channel, etype, fields, kind = item
                    event = self._build(c, channel, etype, fields, kind, ts)
                if event is not None:
                    event["ts"] = ts
                    break
                continue
            event = self._start(ts)
            if event is not None:
                break
        self.tally.add(event)
        return event

    def observe(self, record: Mapping[str, Any], now: float) -> None:
        """Feed back a ``decisions.audit`` record: the customer may answer and convert."""
        cid = str(record.get("customer_id", ""))
        try:
            profile = self.town.profile(cid)
        except (ValueError, IndexError):
            return
        for when, event in self.responses.react(record, profile, now):
            if event["type"] == "offer_response":
                event["event_id"] = f"{self.id_prefix}-{event['event_id']}"
            heapq.heappush(self._due, (when, next(self._seq), event))

    def _start(self, ts: float) -> dict[str, Any] | None:
        for _ in range(40):
            c = self.town.pick(self.rng)
            if self._free.get(c.customer_id, 0.0) > ts:
                continue
            w = where(c, ts)
            if w.mode == "air":
                continue
            if self._opening:
                steps, kind = self._scenario(c, w, ts, self._opening[0])
                if steps:
                    self._opening.pop(0)
                    self.sessions[kind] += 1
                    self.planted_customers[c.customer_id] = kind
                    return self._schedule(c, ts, steps, kind)
            elif self.rng.random() < self.fraud_share:
                steps, kind = self._scenario(c, w, ts)
                if steps:
                    self.sessions[kind] += 1
                    self.planted_customers[c.customer_id] = kind
                    return self._schedule(c, ts, steps, kind)
            steps = self._session(c, w, ts)
            if steps:
                return self._schedule(c, ts, steps, None)
        # More traffic asked for than the customers would make: a page read in internet
        # banking (no place, no money, nothing a rule reads) rather than a hurried customer.
        c = self.town.pick(self.rng)
        return self._build(c, "internet", "page_view", {"device_id": c.devices[1]}, None, ts)

    def _schedule(self, c: Customer, ts: float, steps: list[Step], kind: str | None) -> dict[str, Any] | None:
        session = f"s-{self.rng.getrandbits(32):08x}"
        for offset, channel, etype, fields in steps[1:]:
            fields.setdefault("session_id", session)
            heapq.heappush(self._due, (ts + offset, next(self._seq), (c, channel, etype, fields, kind)))
        end = ts + steps[-1][0]
        self._free[c.customer_id] = end + self.session_gap_s * self.rng.uniform(0.5, 2.0)
        _, channel, etype, fields = steps[0]
        fields.setdefault("session_id", session)
        return self._build(c, channel, etype, fields, kind, ts)

    def _build(self, c: Customer, channel: str, etype: str, fields: dict[str, Any], kind: str | None,
               ts: float) -> dict[str, Any] | None:  # fmt: skip
        """The event as sent at ``ts``, located where the customer is then; None when the
        step is no longer possible (the customer left the ATM, boarded a plane)."""
        ev: dict[str, Any] = {"event_id": self._id(), "customer_id": c.customer_id, "channel": channel,
                              "type": etype, "ts": ts}  # fmt: skip
        w = where(c, ts)
        currency = fields.pop("currency", None) or (w.place.currency if w.place else "GBP")
        if channel == "atm":
            if "terminal_id" not in fields:
                if w.place is None:
                    return None
                fields["terminal_id"], fields["geo"] = w.place.terminal, _geo(w)
            ev["terminal_id"], ev["geo"] = fields["terminal_id"], fields["geo"]
        elif channel in ("mobile", "internet"):
            ev["device_id"] = fields.get("device_id") or c.devices[0 if channel == "mobile" else 1]
            ev["session_id"] = fields.get("session_id") or f"s-{self.rng.getrandbits(32):08x}"
            if channel == "mobile":
                if w.mode == "air":
                    return None
                ev["geo"] = _geo(w)
        if "amount" in fields:
            ev["amount"], ev["currency"] = fields["amount"], currency
        if "attributes" in fields:
            ev["attributes"] = fields["attributes"]
        if kind is not None:
            self.planted_events.add(ev["event_id"])
        return ev

    def _id(self) -> str:
        return f"{self.id_prefix}-{next(self._seq):09d}"

    # ------------------------------------------------------------------ genuine sessions

    def _session(self, c: Customer, w: Whereabouts, ts: float) -> list[Step]:
        rng = self.rng
        channels = dict(c.channels)
        if w.mode != "stay" or w.place is None:
            channels = {"mobile": 1.0}  # on the move: the phone only
        elif self._atm.get(c.customer_id, 0.0) > ts:
            channels.pop("atm")
        channel = rng.choices(list(channels), list(channels.values()))[0]
        self.sessions[channel] += 1
        if channel == "atm":
            self._atm[c.customer_id] = ts + 4 * 3600
            steps: list[Step] = []
            if rng.random() < 0.02:  # a mistyped PIN, then the right one
                steps.append((0.0, "atm", "pin_failure", {}))
            if rng.random() < 0.25:
                steps.append((0.0, "atm", "balance_inquiry", {}))
            etype = "withdrawal" if rng.random() < 0.85 else "deposit"
            steps.append((0.0, "atm", etype, {"amount": self._amount(c, etype, "atm")}))
            return [(i * rng.uniform(15.0, 40.0), *rest) for i, (_, *rest) in enumerate(steps)]  # type: ignore[misc]
        steps = [(0.0, channel, "login", {})]
        t = 0.0
        for etype, p in _SESSION[channel]:
            if rng.random() < p:
                t += rng.uniform(10.0, 90.0)
                fields = {"amount": self._amount(c, etype, channel)} if etype in c.habits else {}
                steps.append((t, channel, etype, fields))
        if rng.random() < self.complaint_share:
            t += rng.uniform(30.0, 120.0)
            steps.append((t, channel, "complaint", {}))
        if rng.random() < 0.3:
            steps.append((t + rng.uniform(5.0, 60.0), channel, "logout", {}))
        return steps

    def _amount(self, c: Customer, etype: str, channel: str) -> float:
        rng, usual = self.rng, c.habits[etype]
        if etype == "withdrawal":  # notes: 10s, around the customer's usual, at most 400
            return float(max(10, min(400, round(usual * rng.choice((0.5, 1, 1, 1, 1.5, 2)) / 10) * 10)))
        if etype == "transfer" and channel == "mobile" and rng.random() < 0.003:
            return round(rng.uniform(1000.0, 2500.0), 2)  # now and then a large one (rent, a car)
        cap = {"transfer": 950.0, "deposit": 1500.0, "bill_payment": 600.0, "card_payment": 300.0}[etype]
        return round(max(1.0, min(cap, usual * rng.lognormvariate(0.0, 0.5))), 2)

    # ------------------------------------------------------------------ planted fraud

    def _scenario(
        self, c: Customer, w: Whereabouts, ts: float, want: str | None = None
    ) -> tuple[list[Step], str]:
        rng = self.rng
        in_town = w.place is not None and w.place in (c.home, c.work, *c.usual)
        fits = SCENARIOS if c.home_city in SKIMMED and in_town else SCENARIOS[1:]
        if want is not None and want not in fits:
            return [], want  # not this customer: the caller tries another
        kind = want or rng.choice(fits)
        if kind == "card_skimming":
            return self._skimming(c, w), kind
        if kind == "account_takeover":
            device = f"{c.customer_id}-x{rng.getrandbits(24):06x}"
            t1 = rng.uniform(40.0, 120.0)
            t2 = t1 + rng.uniform(60.0, 300.0)
            steps: list[Step] = [
                (0.0, "internet", "login", {"device_id": device}),
                (t1, "internet", "password_reset", {"device_id": device}),
            ]
            for i in range(rng.randint(1, 2)):
                fields = {"device_id": device, "amount": round(rng.uniform(1500.0, 6000.0), 2)}
                fields["attributes"] = {"new_payee": True}
                steps.append((t2 + i * rng.uniform(60.0, 240.0), "internet", "transfer", fields))
            return steps, kind
        # mule: deposits just under the threshold at a branch, then transfers out
        t = rng.uniform(600.0, 2400.0)
        steps = [(0.0, "branch", "deposit", {"amount": round(rng.uniform(9000.0, 9900.0), 2)}),
                 (t, "branch", "deposit", {"amount": round(rng.uniform(9000.0, 9900.0), 2)})]  # fmt: skip
        for _ in range(rng.randint(5, 6)):
            t += rng.uniform(180.0, 480.0)
            amount = round(rng.uniform(1000.0, 1900.0), 2)
            steps.append((t, "mobile", "transfer", {"amount": amount, "attributes": {"new_payee": True}}))
        return steps, "mule"

    def _skimming(self, c: Customer, w: Whereabouts) -> list[Step]:
        rng = self.rng
        assert w.place is not None
        amount = self._amount(c, "withdrawal", "atm")
        fields = {"terminal_id": SKIMMED[c.home_city], "geo": _geo(w), "amount": amount}
        steps: list[Step] = [(0.0, "atm", "withdrawal", fields)]
        if rng.random() < 0.4:  # cashed out in the same city
            lat, lon, code, _ = REGIONS[c.home_city]
            currency = "GBP"
        else:
            city = rng.choice([k for k in ("glasgow", "edinburgh") if k != c.home_city] + list(ABROAD))
            if city in ABROAD:
                lat, lon, code, currency = ABROAD[city]
            else:
                lat, lon, code, _ = REGIONS[city]
                currency = "GBP"
        t = rng.uniform(1200.0, 5400.0)
        for n in rng.sample(range(900, 1000), rng.randint(3, 4)):
            geo = dict(zip(("lat", "lon"), _near(lat, lon, 8.0, rng), strict=True))
            amount = float(round(rng.uniform(250.0, 500.0), -1))
            fields = {"terminal_id": f"ATM-{code}-{n}", "geo": geo, "amount": amount, "currency": currency}
            steps.append((t, "atm", "withdrawal", fields))
            t += rng.uniform(90.0, 240.0)
        return steps


def _geo(w: Whereabouts) -> dict[str, float]:
    return {"lat": w.lat, "lon": w.lon}
