"""Offer performance and uplift over a period, from ``decisions.audit`` records (issue 18).
Pure: records in, a report (plain dict) out; reading the audit is engine/service/auditlog.py.

What the audit record holds and this reads: each decision's event (``event.ts``), the
actions shown (``actions``), the candidates dropped and why (``explain.dropped``: stage
``control_group`` is an eligible customer held out of sales offers), the arbitration
record (``explain.arbitration``: explored, control, epsilon, p_first) and the customer's
segment (``features.segment``); and the label events, acknowledged not decided
(``feedback: true``): ``offer_response`` (attributes decision_id, action_id, response)
and ``conversion`` (attributes.product, ``amount``).

Per offer x channel x segment, for decisions in [since, until):

- eligible customers: those the offer reached arbitration for (shown, held out, or
  dropped by risk, a contact cap or rank); held out: the control group among them;
- impressions (times shown) and the answers to them: accepted, clicked, declined,
  ignored (no answer within the response window), pending (window still open);
- conversions: customers shown (from their first impression) or held out (from their
  first hold-out) who converted to the offer's product within the attribution window
  (a conversion after ``until`` counts while the window is open);
- the two conversion rates, the uplift (shown minus held out) with Newcombe's interval,
  conversion value and the incremental conversions and value the uplift implies.

A conversion's product is matched to an offer by id, or through ``products`` (product
code -> offer ids: the pack's ``products:`` per offer, :func:`from_pack`); an offer's own
``attribution:`` in the pack overrides the window. The off-policy part
(:func:`engine.decide.uplift.off_policy`) estimates what an arbitration setting with
another exploration share would have converted.

>>> recs = [_demo("d1", "C1", 100.0, shown="gold"), _demo("d2", "C2", 100.0, held="gold"),
...         {"decision_id": "v1", "customer_id": "C1", "channel": "mobile", "feedback": True,
...          "event": {"type": "conversion", "ts": 200.0, "amount": 5.0, "attributes": {"product": "gold"}}}]
>>> rep = offer_report(recs, ReportOptions(since=0.0, until=1000.0))
>>> row = rep["rows"][0]
>>> row["offer"], row["eligible_customers"], row["shown_customers"], row["held_out"], row["conversions_shown"]
('gold', 2, 1, 1, 1)
>>> row["rate_shown"], row["rate_control"], row["uplift"]["uplift"]
(1.0, 0.0, 1.0)
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.decide.uplift import MIN_DECISIONS, newcombe, off_policy
from engine.rules.ruleset import Offer

ALL = "*"
DAY_S = 86400.0
_ELIGIBLE_STAGES = frozenset({"control_group", "risk", "contact_policy", "rank"})
_ANSWERS = ("accepted", "clicked", "declined", "ignored", "pending", "other")
_MIN_HELD_OUT = 30  # fewer held out: the uplift is shown with a note


@dataclass(frozen=True)
class ReportOptions:
    since: float
    until: float
    attribution_s: float = 30 * DAY_S  # a conversion counts this long after the first exposure
    response_window_s: float = 3 * DAY_S  # no answer by then: ignored (settings.offer_response_window_s)
    target_epsilon: float = 0.0  # the exploration share the off-policy estimate evaluates
    channel: str | None = None
    segment: str | None = None
    offer: str | None = None
    products: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # product code -> offer ids
    values: Mapping[str, float] = field(default_factory=dict)  # offer id -> value (the rule pack's)
    windows: Mapping[str, float] = field(default_factory=dict)  # offer id -> its own attribution_s
    min_decisions: int = MIN_DECISIONS

    def window(self, offer: str) -> float:
        return self.windows.get(offer, self.attribution_s)

    @property
    def longest_window(self) -> float:
        return max([self.attribution_s, *self.windows.values()])


def from_pack(offers: Iterable[Offer]) -> dict[str, Any]:
    """What the rule pack tells the report (``ReportOptions`` fields): each offer's value,
    its product codes (``products:``) and its own attribution window (``attribution:``).

    >>> from engine.rules.ruleset import Offer
    >>> gold = Offer("gold", "offer", "Gold", 120.0, frozenset({"atm"}), {"atm": "x"},
    ...              products=("credit_card",), attribution_s=86400)
    >>> from_pack([gold])
    {'values': {'gold': 120.0}, 'products': {'credit_card': ('gold',)}, 'windows': {'gold': 86400.0}}
    """
    pack = list(offers)
    products: dict[str, tuple[str, ...]] = {}
    for offer in pack:
        for code in offer.products:
            products[code] = (*products.get(code, ()), offer.id)
    return {
        "values": {o.id: o.value for o in pack},
        "products": products,
        "windows": {o.id: float(o.attribution_s) for o in pack if o.attribution_s is not None},
    }


@dataclass
class _Exposure:
    segment: str
    shown: float | None = None  # first impression
    held: float | None = None  # first time held out (control group)
    eligible: float | None = None  # first time eligible otherwise


def offer_report(records: Iterable[Mapping[str, Any]], options: ReportOptions) -> dict[str, Any]:
    acc = OfferReport(options)
    for record in records:
        acc.add(record)
    return acc.result()


class OfferReport:
    """The report, built one audit record at a time (records in any order; a decision id
    seen twice, e.g. a degraded answer and its committed record, counts once)."""

    def __init__(self, options: ReportOptions) -> None:
        self.o = options
        self.seen: set[str] = set()
        self.exposures: dict[tuple[str, str, str], _Exposure] = {}  # (offer, channel, customer)
        self.impressions: dict[tuple[str, str], tuple[str, str, str, float]] = {}  # (decision, offer) ->
        self.responses: dict[tuple[str, str], str] = {}
        self.conversions: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
        self.choices: list[tuple[str, str, float, float, dict[str, float]]] = []
        self.excluded = 0
        self.counts = {"records": 0, "decisions": 0, "conversions": 0, "responses": 0}
        self.data_until = options.since

    def add(self, rec: Mapping[str, Any]) -> None:
        did = str(rec.get("decision_id") or "")
        event = rec.get("event") or {}
        ts = event.get("ts")
        if not did or did in self.seen or not isinstance(ts, int | float):
            return
        self.seen.add(did)
        self.counts["records"] += 1
        self.data_until = max(self.data_until, float(ts))
        if rec.get("feedback"):
            self._label(rec, event, float(ts))
        elif self.o.since <= ts < self.o.until:
            self._decision(rec, did, float(ts))

    def _label(self, rec: Mapping[str, Any], event: Mapping[str, Any], ts: float) -> None:
        attrs = event.get("attributes") or {}
        if event.get("type") == "conversion" and isinstance(attrs.get("product"), str):
            product, amount = attrs["product"], event.get("amount")
            value = float(amount) if isinstance(amount, int | float) else 0.0
            for offer in {product, *self.o.products.get(product, ())}:  # its id, or a code it names
                self.conversions[(str(rec.get("customer_id")), offer)].append((ts, value))
            self.counts["conversions"] += 1
        elif event.get("type") == "offer_response":
            did, action, response = attrs.get("decision_id"), attrs.get("action_id"), attrs.get("response")
            if isinstance(did, str) and isinstance(action, str) and isinstance(response, str):
                self.responses.setdefault((did, action), response)
                self.counts["responses"] += 1

    def _decision(self, rec: Mapping[str, Any], did: str, ts: float) -> None:
        channel, customer = str(rec.get("channel")), str(rec.get("customer_id"))
        features = rec.get("features") or {}
        segment = str(features.get("segment") or "unknown")
        if (self.o.channel and channel != self.o.channel) or (self.o.segment and segment != self.o.segment):
            return
        self.counts["decisions"] += 1
        explain = rec.get("explain") or {}
        for action in rec.get("actions") or ():
            if action.get("kind") in ("offer", "retention", "service"):
                self._expose(action["id"], channel, customer, segment, ts, "shown")
                self.impressions[(did, action["id"])] = (action["id"], channel, segment, ts)
        for dropped in explain.get("dropped") or ():
            stage = dropped.get("stage")
            if stage in _ELIGIBLE_STAGES:
                self._expose(dropped["id"], channel, customer, segment, ts,
                             "held" if stage == "control_group" else "eligible")  # fmt: skip
        self._choice(rec, explain, did, customer, ts)

    def _expose(self, offer: str, channel: str, customer: str, segment: str, ts: float, how: str) -> None:
        if self.o.offer and offer != self.o.offer:
            return
        exp = self.exposures.setdefault((offer, channel, customer), _Exposure(segment))
        if getattr(exp, how) is None or ts < getattr(exp, how):
            setattr(exp, how, ts)

    def _choice(self, rec: Mapping[str, Any], explain: Mapping[str, Any], did: str, customer: str,
                ts: float) -> None:  # fmt: skip
        """The decision's logged first choice and its propensities, for the off-policy part."""
        arb = explain.get("arbitration") or {}
        p_first = arb.get("p_first") or {}
        actions = rec.get("actions") or ()
        if not p_first:
            return
        capped = any(d.get("stage") == "contact_policy" and d.get("id") in p_first
                     for d in explain.get("dropped") or ())  # fmt: skip
        first = str(actions[0].get("id")) if actions else ""
        if capped or first not in p_first or not p_first[first]:
            self.excluded += 1  # what was ranked first is not known: a cap may have skipped it
            return
        eps = arb.get("epsilon")
        self.choices.append(
            (customer, first, ts, float(eps) if isinstance(eps, int | float) else 0.0, dict(p_first))
        )

    # -- the result ---------------------------------------------------------------

    def converted(self, customer: str, offer: str, start: float | None) -> tuple[bool, float]:
        """Whether the customer converted to the offer's product within the window after
        ``start``, and the amount of the first such conversion."""
        if start is None:
            return (False, 0.0)
        found = sorted(self.conversions.get((customer, offer), ()))
        i = bisect.bisect_right(found, (start, float("inf")))
        if i < len(found) and found[i][0] <= start + self.o.window(offer):
            return (True, found[i][1])
        return (False, 0.0)

    def result(self) -> dict[str, Any]:
        cells: dict[tuple[str, str, str], list[tuple[str, _Exposure]]] = defaultdict(list)
        merged: dict[tuple[str, str], _Exposure] = {}
        for (offer, channel, customer), exp in self.exposures.items():
            cells[(offer, channel, exp.segment)].append((customer, exp))
            total = merged.setdefault((offer, customer), _Exposure(ALL))
            for how in ("shown", "held", "eligible"):
                value = getattr(exp, how)
                if value is not None and (getattr(total, how) is None or value < getattr(total, how)):
                    setattr(total, how, value)
        totals: dict[tuple[str, str, str], list[tuple[str, _Exposure]]] = defaultdict(list)
        for (offer, customer), exp in merged.items():
            totals[(offer, ALL, ALL)].append((customer, exp))
        answers = self._answers()
        o = self.o
        return {
            "period": {"since": o.since, "until": o.until, "data_until": self.data_until},
            "settings": {"attribution_days": o.attribution_s / DAY_S,
                         "attribution_days_by_offer": {k: v / DAY_S for k, v in sorted(o.windows.items())},
                         "response_window_days": o.response_window_s / DAY_S,
                         "filters": {"channel": o.channel, "segment": o.segment, "offer": o.offer}},
            "records": dict(self.counts),
            "rows": [self._row(k, v, answers) for k, v in sorted(cells.items())],
            "totals": [self._row(k, v, answers) for k, v in sorted(totals.items())],
            "off_policy": self._off_policy(),
        }  # fmt: skip

    def _answers(self) -> dict[tuple[str, str, str], dict[str, int]]:
        out: dict[tuple[str, str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for key, (offer, channel, segment, ts) in self.impressions.items():
            response = self.responses.get(key)
            if response is None:
                response = "ignored" if ts + self.o.response_window_s <= self.data_until else "pending"
            elif response not in ("accepted", "clicked", "declined"):
                response = "other"
            for cell in ((offer, channel, segment), (offer, ALL, ALL)):
                out[cell]["impressions"] += 1
                out[cell][response] += 1
        return out

    def _row(self, key: tuple[str, str, str], members: list[tuple[str, _Exposure]],
             answers: Mapping[tuple[str, str, str], Mapping[str, int]]) -> dict[str, Any]:  # fmt: skip
        offer, channel, segment = key
        shown = [(c, e) for c, e in members if e.shown is not None]
        held = [(c, e) for c, e in members if e.shown is None and e.held is not None]
        conv_shown = [self.converted(c, offer, e.shown) for c, e in shown]
        conv_held = [self.converted(c, offer, e.held) for c, e in held]
        k1, k2 = sum(1 for hit, _ in conv_shown if hit), sum(1 for hit, _ in conv_held if hit)
        diff = newcombe(k1, len(shown), k2, len(held))
        # Intent to treat: every eligible customer not held out (shown or not), from their
        # first exposure, against the held out. Both groups were chosen only by the control
        # group's hash, so this is the policy's effect without the caps' and ranking's choice.
        treated = [(c, e) for c, e in members if e.shown is not None or e.held is None]
        itt = [
            self.converted(c, offer, min(t for t in (e.shown, e.eligible) if t is not None))
            for c, e in treated
        ]
        k3 = sum(1 for hit, _ in itt if hit)
        value = self.o.values.get(offer)
        a = answers.get(key, {})
        note = None
        if len(held) < _MIN_HELD_OUT:
            note = f"only {len(held)} customers held out: too few to measure uplift"
        extra = None if diff.diff is None else diff.diff * len(shown)
        return {
            "offer": offer, "channel": channel, "segment": segment,
            "eligible_customers": len(members), "shown_customers": len(shown), "held_out": len(held),
            "impressions": a.get("impressions", 0),
            "responses": {r: a.get(r, 0) for r in _ANSWERS},
            "conversions_shown": k1, "conversions_control": k2,
            "rate_shown": _rate(k1, len(shown)), "rate_control": _rate(k2, len(held)),
            "uplift": diff.to_dict(),
            "not_held_out": len(itt), "conversions_not_held_out": k3,
            "rate_not_held_out": _rate(k3, len(itt)),
            "uplift_itt": newcombe(k3, len(itt), k2, len(held)).to_dict(),
            "conversion_value": round(sum(amount for hit, amount in conv_shown if hit), 2),
            "incremental_conversions": None if extra is None else round(extra, 2),
            "incremental_value": None if extra is None or value is None else round(extra * value, 2),
            "note": note,
        }  # fmt: skip

    def _off_policy(self) -> dict[str, Any]:
        eps_t = self.o.target_epsilon
        samples: list[tuple[float, float]] = []
        values: list[tuple[float, float]] = []
        logged_eps: set[float] = set()
        for customer, first, ts, eps, p_first in self.choices:
            n = len(p_first)
            greedy = max(sorted(p_first), key=lambda a: p_first[a])  # ties: the first id
            logged_eps.add(eps)
            target = (1 - eps_t) * (first == greedy) + eps_t / n
            weight = target / p_first[first]
            hit, _ = self.converted(customer, first, ts)
            samples.append((weight, float(hit)))
            values.append((weight, float(hit) * self.o.values.get(first, 0.0)))
        est = off_policy(samples, min_decisions=self.o.min_decisions)
        est["value"] = off_policy(values, min_decisions=self.o.min_decisions)["snips"]
        est["target_epsilon"] = eps_t
        est["logged_epsilon"] = sorted(logged_eps)
        est["excluded"] = self.excluded
        est["reward"] = "conversion to the first offer shown within the attribution window, per decision"
        return est


def _rate(k: int, n: int) -> float | None:
    return round(k / n, 6) if n else None


def _demo(did: str, customer: str, ts: float, shown: str = "", held: str = "") -> dict[str, Any]:
    """A minimal audit record (for the examples above)."""
    return {
        "decision_id": did,
        "customer_id": customer,
        "channel": "mobile",
        "event": {"ts": ts, "type": "login"},
        "features": {"segment": "mass"},
        "actions": [{"id": shown, "kind": "offer"}] if shown else [],
        "explain": {
            "dropped": [{"id": held, "stage": "control_group"}] if held else [],
            "arbitration": {"p_first": {shown: 1.0} if shown else {}},
        },
    }
