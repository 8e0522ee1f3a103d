"""Scoring a named list of offers for one customer without an interaction: outbound
campaigns (call centre, e-mail, letter). Pure: values in, values out.

An interaction shows an offer only if it survives eligibility, applicability,
suitability, the risk gate, the control group and the contact-policy caps, so its
propensity is never seen otherwise. Here every named offer is scored and every check is
run and reported on its own, with a machine-readable code for each that fails:

======================  ===========================================================
check                   codes when it fails
======================  ===========================================================
``channel``             ``not_for_channel``: the offer is not made for the channel
``validity``            ``outside_validity``
``eligibility``         ``not_eligible`` (or ``rule_error``: a clause raised)
``applicability``       ``not_applicable``; *skipped* (``no_interaction``) unless the
                        request names an ``event_type``: applicability is about the
                        moment of an interaction, and a campaign has none
``suitability``         ``not_suitable``
``risk``                ``risk_verdict``: a step_up or block verdict holds sales offers
``control_group``       ``control_group``: the customer is held out of sales offers
``contact_policy``      ``offer_cap``, ``channel_cap``, ``overall_cap``,
                        ``decline_cooldown``, ``daily_cap`` (every one that applies)
======================  ===========================================================

The rules, risk assessment and arbitration are the decision's own (engine.decide.pipeline,
engine.decide.arbitration); the caps are checked as the commit script checks them
(engine/store/lua/commit.lua), on a read-only copy of the customer's contact history.

>>> from engine.decide.rulebook import load
>>> from engine.rules.pack import read_bundle
>>> from engine.domain.scoring import BuiltinScorer
>>> from engine.settings import Settings
>>> rules = load(read_bundle(Settings().rules_path()), frozenset(Settings().channels), "v").rules
>>> snap = Snapshot(windows={}, profile={"income_band": "high", "products": [], "kyc_risk": "low"})
>>> ask = Request("C1", "call_centre", ("credit_card_gold", "nope"))
>>> out = score_offers(ask, snap, Contacts(), rules, BuiltinScorer(), DecisionPolicy(), 1795428000.0)
>>> gold = out.offers[0]
>>> gold.id, gold.propensity, round(gold.score, 3), gold.passes, gold.checks["applicability"]
('credit_card_gold', 0.05, 7.2, True, 'skipped')
>>> out.unknown
('nope',)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from engine.decide.arbitration import arbitrate
from engine.decide.pipeline import DecisionPolicy, assess_risk
from engine.domain.decision import Risk
from engine.domain.events import Event
from engine.domain.features import build_features
from engine.domain.policy import ArbitrationPolicy, in_control_group
from engine.domain.scoring import Scorer, Scores
from engine.domain.state import Snapshot
from engine.errors import EventError
from engine.rules.ruleset import Clause, Offer, RuleError, RuleSet

MAX_OFFERS = 100  # per request: a campaign scores a customer's short list, not the catalogue
NO_EVENT_TYPE = "outbound"  # the context event's type when the request names none
CHECKS = ("channel", "validity", "eligibility", "applicability", "suitability", "risk", "control_group",
          "contact_policy")  # fmt: skip
_STAGE_CODES = {
    "eligibility": "not_eligible",
    "applicability": "not_applicable",
    "suitability": "not_suitable",
}
_ALLOW = Risk(0.0, "allow")


@dataclass(frozen=True, slots=True)
class Request:
    customer_id: str
    channel: str
    offers: tuple[str, ...]
    event_type: str | None = None  # set: applicability is checked against an event of this type


@dataclass(frozen=True, slots=True)
class Contacts:
    """What the contact policy reads, as the customer's keys hold it now."""

    shown: tuple[tuple[str, float], ...] = ()  # ('decision|action|channel', ts), the last 7 days
    declined: Mapping[str, float] = field(default_factory=dict)  # offer -> ts of the last decline
    daily: Mapping[str, int] = field(default_factory=dict)  # offer -> impressions today, all customers


@dataclass(frozen=True, slots=True)
class Finding:
    check: str
    code: str
    why: str
    values: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.check, "code": self.code, "why": self.why, "values": dict(self.values)}


@dataclass(frozen=True, slots=True)
class OfferScore:
    id: str
    kind: str
    propensity: float  # the model's, unrounded
    value: float
    lever: float
    weight: float
    score: float  # propensity x value x levers x weight: what arbitration ranks by
    rank: int
    failed: tuple[Finding, ...]
    skipped: tuple[Finding, ...]

    @property
    def passes(self) -> bool:
        return not self.failed

    @property
    def checks(self) -> dict[str, str]:
        out = dict.fromkeys(CHECKS, "pass")
        out.update({f.check: "skipped" for f in self.skipped})
        out.update({f.check: "fail" for f in self.failed})
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "rank": self.rank, "propensity": self.propensity,
                "value": self.value, "lever": self.lever, "weight": self.weight, "score": self.score,
                "passes": self.passes, "checks": self.checks, "failed": [f.to_dict() for f in self.failed],
                "skipped": [f.to_dict() for f in self.skipped]}  # fmt: skip


@dataclass(frozen=True)
class OutboundScore:
    request: Request
    ts: float
    scores: Scores
    risk: Risk
    control: bool
    offers: tuple[OfferScore, ...]  # by rank: score, highest first
    unknown: tuple[str, ...]  # named offers the published rules do not have
    versions: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "customer_id": self.request.customer_id,
            "channel": self.request.channel,
            "event_type": self.request.event_type,
            "ts": self.ts,
            "scores": {
                "fraud": self.scores.fraud,
                "churn": self.scores.churn,
                "challengers": dict(self.scores.shadow),
            },
            "risk": self.risk.to_dict(),
            "control_group": self.control,
            "offers": [o.to_dict() for o in self.offers]
            + [{"id": oid, "status": "unknown_offer"} for oid in self.unknown],
            "versions": dict(self.versions),
        }


def parse_request(body: bytes, channels: tuple[str, ...], event_types: tuple[str, ...]) -> Request:
    """A request body, validated: ``customer_id``, ``channel``, ``offers`` (1 to 100 ids)
    and an optional ``event_type``; :class:`EventError` with a code and field otherwise.

    >>> parse_request(b'{"customer_id": "C1", "channel": "atm", "offers": ["a", "a", "b"]}', ("atm",), ())
    Request(customer_id='C1', channel='atm', offers=('a', 'b'), event_type=None)
    >>> parse_request(b'{"customer_id": "C1", "channel": "fax", "offers": ["a"]}', ("atm",), ())
    Traceback (most recent call last):
    ...
    engine.errors.EventError: channel 'fax' is not configured
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise EventError("invalid_json", f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise EventError("not_an_object", "the request must be a JSON object")
    customer, channel = _text(data, "customer_id"), _text(data, "channel")
    if channel not in channels:
        raise EventError("unknown_channel", f"channel {channel!r} is not configured", "channel")
    offers = data.get("offers")
    if offers is None:
        raise EventError("missing_field", "missing required field", "offers")
    if not isinstance(offers, list) or not all(isinstance(o, str) for o in offers):
        raise EventError("wrong_type", "offers must be a list of offer ids", "offers")
    if not 1 <= len(offers) <= MAX_OFFERS:
        raise EventError("invalid_value", f"offers names 1 to {MAX_OFFERS} offer ids", "offers")
    etype = data.get("event_type")
    if etype is not None and (not isinstance(etype, str) or etype not in event_types):
        raise EventError("unknown_type", f"event type {etype!r} is not configured", "event_type")
    return Request(customer, channel, tuple(dict.fromkeys(offers)), etype)


def _text(data: Mapping[str, Any], name: str) -> str:
    value = data.get(name)
    if value is None:
        raise EventError("missing_field", "missing required field", name)
    if not isinstance(value, str):
        raise EventError("wrong_type", f"{name} must be a string", name)
    return value


def score_offers(
    request: Request,
    snap: Snapshot,
    contacts: Contacts,
    rules: RuleSet,
    scorer: Scorer,
    policy: DecisionPolicy,
    now: float,
) -> OutboundScore:
    """Score and check each named offer for the customer at ``now`` (see the module doc)."""
    known = tuple(rules.offer_index[o] for o in request.offers if o in rules.offer_index)
    unknown = tuple(o for o in request.offers if o not in rules.offer_index)
    # The context of the checks: an event of no interaction type, on the campaign's channel.
    event = Event("outbound", request.customer_id, request.channel, request.event_type or NO_EVENT_TYPE, now)
    features = build_features(event, snap, scorer.profile_fields)
    scores = scorer.score(features, tuple(o.id for o in known), event.attributes)
    raw_event, score_map = event.to_dict(), scores.to_dict()
    ctx = rules.evaluator.bind(raw_event, features, snap.profile, score_map, now, request.channel)
    sources = {"event": raw_event, "state": features, "profile": snap.profile, "scores": score_map}
    risk = assess_risk(scores, rules.evaluate(ctx, sources, request.channel, now), policy)
    arbitration = rules.arbitration.get(request.channel) or ArbitrationPolicy(max_actions=policy.max_actions)
    greedy = replace(arbitration, exploration=0.0, control_group=0.0)
    ranked, _, _ = arbitrate(known, scores, _ALLOW, request.channel, greedy)
    # The gates as arbitration applies them: what it drops under this risk verdict, and
    # for this customer's control-group draw, each asked on its own.
    held = {d.id: d for d in arbitrate(known, scores, risk, request.channel, greedy)[1]}
    control = in_control_group(request.customer_id, arbitration.control_group)
    with_control = replace(arbitration, exploration=0.0)
    held_out = {d.id: d for d in arbitrate(known, scores, _ALLOW, request.channel, with_control,
                                           customer_id=request.customer_id)[1]}  # fmt: skip
    out = []
    for rank, action in enumerate(ranked, 1):
        offer = rules.offer_index[action.id]
        failed = _rule_findings(offer, request, ctx, sources, now)
        skipped: tuple[Finding, ...] = ()
        if request.event_type is None and offer.applicability.clauses:
            skipped = (Finding("applicability", "no_interaction", "no interaction to check it against: "
                               "name an event_type to check it"),)  # fmt: skip
            failed = [f for f in failed if f.check != "applicability"]
        if offer.id in held:
            failed.append(Finding("risk", "risk_verdict", held[offer.id].why))
        if offer.id in held_out:
            failed.append(Finding("control_group", "control_group", held_out[offer.id].why))
        failed += contact_findings(offer, request.channel, now, contacts)
        weight = arbitration.weight(offer.kind)
        propensity = scores.offer.get(offer.id, 0.0)
        out.append(OfferScore(offer.id, offer.kind, propensity, offer.value, offer.lever, weight,
                              action.score, rank, tuple(failed), skipped))  # fmt: skip
    versions = {"rules": rules.version, "models": dict(scorer.versions)}
    return OutboundScore(request, now, scores, risk, control, tuple(out), unknown, versions)


def _rule_findings(offer: Offer, request: Request, ctx: Any, sources: Any, now: float) -> list[Finding]:
    """Every rule stage the offer fails (the decision stops at the first; a campaign
    wants to know them all), with the clause that failed and the values it read."""
    found: list[Finding] = []
    if request.channel not in offer.channels:
        found.append(Finding("channel", "not_for_channel", f"not made for channel {request.channel}"))
    if (offer.valid_from is not None and now < offer.valid_from) or (
        offer.valid_until is not None and now >= offer.valid_until
    ):
        found.append(Finding("validity", "outside_validity", "outside its validity window"))
    for stage, clauses in offer.stages:
        failing = _first_failing(clauses, ctx)
        if failing is not None:
            clause, error = failing
            code = "rule_error" if error else _STAGE_CODES[stage]
            why = error or f"{clause.source} is false"
            found.append(Finding(stage, code, why, clause.values(sources)))
    return found


def _first_failing(clauses: tuple[Clause, ...], ctx: Any) -> tuple[Clause, str] | None:
    for clause in clauses:
        try:
            if not clause.holds(ctx):
                return clause, ""
        except RuleError as exc:  # a broken rule fails its offer here, as in a decision
            return clause, str(exc)
    return None


def contact_findings(offer: Offer, channel: str, now: float, contacts: Contacts) -> list[Finding]:
    """Every contact-policy cap the offer would break if shown now, as the commit script
    counts them: impressions in each cap's window (of this offer, on this channel, or
    all), a cool-down after a decline, the global daily cap.

    >>> from engine.rules.ruleset import Cap, ContactPolicy
    >>> offer = Offer("gold", "offer", "Gold", 1.0, frozenset({"atm"}), {},
    ...               contact=ContactPolicy(per_offer=Cap(1, 86400, "1 per 1d"), decline_cooldown_s=3600))
    >>> seen = Contacts(shown=(("d1|gold|atm", 1000.0),), declined={"gold": 1500.0})
    >>> [f.code for f in contact_findings(offer, "atm", 2000.0, seen)]
    ['offer_cap', 'decline_cooldown']
    >>> contact_findings(offer, "atm", 200000.0, seen)
    []
    """
    policy = offer.contact
    found: list[Finding] = []
    shown = [_parse_contact(member, ts) for member, ts in contacts.shown]
    for kind, cap in (
        ("offer", policy.per_offer),
        ("channel", policy.per_channel),
        ("overall", policy.overall),
    ):
        if cap is None:
            continue
        n = sum(
            1
            for action, ch, ts in shown
            if ts > now - cap.window_s
            and (
                kind == "overall"
                or (kind == "offer" and action == offer.id)
                or (kind == "channel" and ch == channel)
            )
        )
        if n >= cap.max:
            found.append(Finding("contact_policy", f"{kind}_cap", f"{kind} cap reached: at most {cap.label}",
                                 {"shown": n, "max": cap.max, "window_s": cap.window_s}))  # fmt: skip
    declined = contacts.declined.get(offer.id)
    if policy.decline_cooldown_s > 0 and declined is not None and now - declined < policy.decline_cooldown_s:
        found.append(Finding("contact_policy", "decline_cooldown",
                             f"declined {int((now - declined) // 3600)} h ago; cool-down not over",
                             {"declined_at": declined, "cooldown_s": policy.decline_cooldown_s}))  # fmt: skip
    today = contacts.daily.get(offer.id, 0)
    if policy.daily_cap > 0 and today >= policy.daily_cap:
        found.append(Finding("contact_policy", "daily_cap",
                             f"daily cap reached: {policy.daily_cap} impressions today",
                             {"shown_today": today, "daily_cap": policy.daily_cap}))  # fmt: skip
    return found


def _parse_contact(member: str, ts: float) -> tuple[str, str, float]:
    # '<decision>|<action>|<channel>', as the commit script writes and reads it.
    _, _, rest = member.partition("|")
    action, _, channel = rest.partition("|")
    return action, channel, ts
