"""Realistic, deterministic interaction traffic for the demo, tests and benchmarks.

Customers are drawn Zipf-style (a few are very active, most are not); each channel
has its own mix of event types; fraud scenarios (PIN brute force, account takeover,
impossible travel) and complaints are injected at configurable rates; a fraction of
events can be made invalid on purpose. The generator keeps its own tally of every
valid event, so a test can compare Beacon's counters with it.

>>> gen = TrafficGenerator(Population(50, seed=1), seed=2)
>>> ev = gen.next_event(1795428000.0)
>>> {"event_id", "customer_id", "channel", "type", "ts"} <= set(ev), ev["channel"] in CHANNEL_MIX
(True, True)
>>> gen.tally.valid
1
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from engine.domain.state import to_cents

CITIES = {
    "london": (51.5074, -0.1278),
    "manchester": (53.4808, -2.2426),
    "edinburgh": (55.9533, -3.1883),
    "paris": (48.8566, 2.3522),
    "madrid": (40.4168, -3.7038),
    "new_york": (40.7128, -74.0060),
    "singapore": (1.3521, 103.8198),
}
HOME_CITIES = ("london", "manchester", "edinburgh")
CHANNEL_MIX = {"mobile": 0.5, "internet": 0.3, "atm": 0.2}
TYPE_MIX = {
    "atm": {"withdrawal": 0.5, "balance_inquiry": 0.3, "deposit": 0.15, "pin_failure": 0.05},
    "internet": {"login": 0.3, "page_view": 0.3, "transfer": 0.15, "bill_payment": 0.15, "product_view": 0.1},
    "mobile": {
        "login": 0.35,
        "balance_inquiry": 0.2,
        "transfer": 0.15,
        "card_payment": 0.15,
        "page_view": 0.15,
    },
}
AMOUNT_MEANS = {"withdrawal": 80, "deposit": 300, "transfer": 250, "bill_payment": 90, "card_payment": 45}


@dataclass(frozen=True)
class Customer:
    customer_id: str
    home: str
    devices: tuple[str, ...]
    profile: dict[str, Any]


@dataclass
class Population:
    size: int
    seed: int = 7
    prefix: str = "C"
    zipf_s: float = 1.1
    customers: list[Customer] = field(init=False)
    _cum: list[float] = field(init=False)

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        self.customers = [self._make(i, rng) for i in range(self.size)]
        weights = [1.0 / (rank + 1) ** self.zipf_s for rank in range(self.size)]
        rng.shuffle(weights)  # activity is not correlated with id order
        self._cum = list(itertools.accumulate(weights))

    def _make(self, i: int, rng: random.Random) -> Customer:
        cid = f"{self.prefix}{i:06d}"
        products = ["current"] + [p for p in ("savings", "credit_card", "mortgage") if rng.random() < 0.35]
        profile = {
            "segment": rng.choice(["mass", "mass", "affluent", "private", "young"]),
            "age_band": rng.choice(["18-25", "26-40", "41-60", "60+"]),
            "income_band": rng.choice(["low", "middle", "upper_middle", "high"]),
            "kyc_risk": rng.choices(["low", "medium", "high"], [0.8, 0.17, 0.03])[0],
            "products": products,
            "timezone": "Europe/London",
            "tenure_months": rng.randint(1, 240),
        }
        devices = tuple(f"{cid}-dev{j}" for j in range(rng.randint(1, 2)))
        return Customer(cid, rng.choice(HOME_CITIES), devices, profile)

    def profile(self, customer_id: str) -> dict[str, Any]:
        """The profile of a customer of this population (ids are ``<prefix><index>``)."""
        return self.customers[int(customer_id[len(self.prefix) :])].profile

    def pick(self, rng: random.Random) -> Customer:
        x = rng.random() * self._cum[-1]
        return self.customers[bisect.bisect_left(self._cum, x)]


@dataclass
class Tally:
    """What the generator sent, per customer: counts by dimension and amounts in cents."""

    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    cents: Counter[tuple[str, str]] = field(default_factory=Counter)
    valid: int = 0
    invalid: int = 0

    def add(self, event: dict[str, Any]) -> None:
        self.valid += 1
        cid = event["customer_id"]
        amount = event.get("amount")
        for dim in ("all", "ch:" + event["channel"], "ty:" + event["type"]):
            self.counts[(cid, dim)] += 1
            if amount is not None:
                self.cents[(cid, dim)] += to_cents(amount)


class TrafficGenerator:
    def __init__(
        self,
        population: Population,
        seed: int = 11,
        id_prefix: str = "ev",
        fraud_rate: float = 0.01,
        complaint_rate: float = 0.003,
        invalid_rate: float = 0.0,
    ) -> None:
        self.pop = population
        self.rng = random.Random(seed)
        self.id_prefix = id_prefix
        self.fraud_rate = fraud_rate
        self.complaint_rate = complaint_rate
        self.invalid_rate = invalid_rate
        self.tally = Tally()
        self._seq = itertools.count()
        self._pending: list[dict[str, Any]] = []  # the rest of an ongoing scenario

    def _id(self) -> str:
        return f"{self.id_prefix}-{next(self._seq):09d}"

    def next_event(self, ts: float) -> dict[str, Any]:
        """One valid event at time ``ts`` (scenarios unfold over following calls)."""
        if self._pending:
            event = self._pending.pop(0)
            event["ts"] = ts
        else:
            r = self.rng.random()
            customer = self.pop.pick(self.rng)
            if r < self.fraud_rate:
                event = self._scenario(customer, ts)
            elif r < self.fraud_rate + self.complaint_rate:
                event = self._base(customer, self.rng.choice(["internet", "mobile"]), "complaint", ts)
            else:
                event = self._normal(customer, ts)
        self.tally.add(event)
        return event

    def next_record(self, ts: float) -> tuple[bytes, bytes, bool]:
        """(key, value, valid): an encoded event, or on purpose an invalid one."""
        if self.invalid_rate and self.rng.random() < self.invalid_rate:
            self.tally.invalid += 1
            key, value = self._invalid(ts)
            return key, value, False
        event = self.next_event(ts)
        return event["customer_id"].encode(), orjson.dumps(event), True

    def _base(self, c: Customer, channel: str, etype: str, ts: float) -> dict[str, Any]:
        ev: dict[str, Any] = {
            "event_id": self._id(),
            "customer_id": c.customer_id,
            "channel": channel,
            "type": etype,
            "ts": ts,
        }
        if channel == "atm":
            ev["terminal_id"] = f"ATM-{c.home[:3].upper()}-{self.rng.randint(1, 40):03d}"
            ev["geo"] = _jitter(CITIES[c.home], self.rng)
        else:
            ev["device_id"] = self.rng.choice(c.devices)
            ev["session_id"] = f"s-{self.rng.getrandbits(32):08x}"
            if channel == "mobile":
                ev["geo"] = _jitter(CITIES[c.home], self.rng)
        if etype in AMOUNT_MEANS:
            ev["amount"] = round(self.rng.expovariate(1 / AMOUNT_MEANS[etype]) + 1, 2)
            ev["currency"] = "GBP"
        return ev

    def _normal(self, c: Customer, ts: float) -> dict[str, Any]:
        channel = _choose(CHANNEL_MIX, self.rng)
        return self._base(c, channel, _choose(TYPE_MIX[channel], self.rng), ts)

    def _scenario(self, c: Customer, ts: float) -> dict[str, Any]:
        kind = self.rng.choice(["pin_bruteforce", "takeover", "impossible_travel"])
        if kind == "pin_bruteforce":
            steps = [self._base(c, "atm", "pin_failure", ts) for _ in range(self.rng.randint(3, 5))]
            terminal = steps[0]["terminal_id"]
            for s in steps:
                s["terminal_id"] = terminal
        elif kind == "takeover":
            new_device = f"{c.customer_id}-x{self.rng.getrandbits(24):06x}"
            login = self._base(c, "internet", "login", ts)
            transfer = self._base(c, "internet", "transfer", ts)
            login["device_id"] = transfer["device_id"] = new_device
            transfer["amount"] = round(self.rng.uniform(1500, 9000), 2)
            steps = [login, transfer]
        else:
            home = self._base(c, "atm", "withdrawal", ts)
            away = self._base(c, "atm", "withdrawal", ts)
            away["geo"] = _jitter(CITIES[self.rng.choice(["new_york", "singapore", "madrid"])], self.rng)
            away["terminal_id"] = "ATM-ABROAD-001"
            steps = [home, away]
        self._pending.extend(steps[1:])
        return steps[0]

    def _invalid(self, ts: float) -> tuple[bytes, bytes]:
        c = self.pop.pick(self.rng)
        ev = self._base(c, "atm", "withdrawal", ts)
        kind = self.rng.randrange(6)
        if kind == 0:
            return c.customer_id.encode(), b'{"event_id": "broken", "customer_id": '
        if kind == 1:
            ev["amount"] = "a lot"
        elif kind == 2:
            ev["channel"] = "fax"
        elif kind == 3:
            del ev["customer_id"]
        elif kind == 4:
            ev["amount"] = -5
        else:
            ev["ts"] = ts + 86400 * 3
        return c.customer_id.encode(), orjson.dumps(ev)


def _choose(mix: dict[str, float], rng: random.Random) -> str:
    return rng.choices(list(mix), list(mix.values()))[0]


def _jitter(point: tuple[float, float], rng: random.Random) -> dict[str, float]:
    return {
        "lat": round(point[0] + rng.uniform(-0.05, 0.05), 5),
        "lon": round(point[1] + rng.uniform(-0.05, 0.05), 5),
    }
