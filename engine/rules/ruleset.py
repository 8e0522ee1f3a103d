"""Typed rules and their side-effect-free evaluation.

Rule packs (``rules/*.yaml``, loaded by engine.rules.pack) become these objects. A
:class:`RuleSet` evaluates all of them against one shared CEL context per event and
returns what matched and why: the risk rules that fired with the values involved,
each offer kept or dropped at which stage by which condition, and typology scores.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from engine.domain.decision import ActionKind, Verdict
from engine.domain.policy import ArbitrationPolicy
from engine.errors import BeaconError
from engine.rules.celenv import Evaluator, Needs, lookup

Sources = Mapping[str, Mapping[str, Any]]  # plain-Python twins of the CEL variables
SEVERITIES = ("low", "medium", "high", "critical")
OFFER_STAGES = ("eligibility", "applicability", "suitability")
_TEMPLATE = re.compile(r"\{((?:event|state|profile|scores)\.[\w.]+)(?::([^{}]*))?\}")


class RuleError(BeaconError):
    """A clause raised in :meth:`Clause.holds` (the load-time dry run reports it as a
    ``RulePackError``). At decision time a clause that raises is contained instead:
    counted as not matched and reported in :attr:`RuleOutcome.errors`."""


@dataclass(frozen=True, slots=True)
class Clause:
    """One CEL expression; a condition holds when all its clauses do."""

    source: str
    program: Any  # a compiled cel.Program
    refs: tuple[str, ...]  # "state.amount", "event.attributes.new_payee", ...

    def holds(self, ctx: Any) -> bool:
        try:
            return self.program.execute(ctx) is True
        except Exception as exc:
            raise RuleError(f"{self.source!r}: {type(exc).__name__}: {exc}") from exc

    def values(self, sources: Sources) -> dict[str, Any]:
        return {ref: lookup(ref, sources) for ref in self.refs}


@dataclass(frozen=True, slots=True)
class Condition:
    clauses: tuple[Clause, ...] = ()

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(c.source for c in self.clauses)


@dataclass(frozen=True, slots=True)
class Cap:
    max: int
    window_s: int
    label: str  # "2 per 7d", for explanations


@dataclass(frozen=True, slots=True)
class ContactPolicy:
    """Impression caps per customer, a cool-down after a decline, a global daily cap."""

    per_offer: Cap | None = None
    per_channel: Cap | None = None
    overall: Cap | None = None
    decline_cooldown_s: int = 0
    daily_cap: int = 0  # impressions of the offer per UTC day over all customers; 0: none


@dataclass(frozen=True, slots=True)
class RiskRule:
    id: str
    name: str
    severity: str
    when: Condition
    reason: str  # template: "{state.pin_failures_1h} PIN failures", "{event.amount:.2f}"
    action: Verdict
    suppress_s: int = 0  # no second alert for the same customer and rule within this

    def explain(self, sources: Sources) -> str:
        def fill(m: re.Match[str]) -> str:
            value = lookup(m[1], sources)
            try:
                return format(value, m[2] or "")
            except (TypeError, ValueError):
                return str(value)

        return _TEMPLATE.sub(fill, self.reason)


@dataclass(frozen=True, slots=True)
class Typology:
    """Rules grouped with weights into a score (the way Tazama scores typologies)."""

    id: str
    name: str
    weights: Mapping[str, float]
    review: float
    block: float

    def verdict(self, score: float) -> Verdict:
        return "block" if score >= self.block else "review" if score >= self.review else "allow"


# Event types that move money: without customer state they step up or block, never allow.
MONEY_MOVEMENT = frozenset({"withdrawal", "transfer", "bill_payment", "card_payment"})


@dataclass(frozen=True, slots=True)
class StateUnavailable:
    """A risk pack's ``when_state_unavailable``: the least verdict per event type when
    there is no customer state (Redis failed or did not answer within the budget).

    Without the section every type steps up: fail closed unless the pack says otherwise.

    >>> policy = StateUnavailable("step_up", {"balance_inquiry": "allow"})
    >>> policy.floor("balance_inquiry"), policy.floor("transfer")
    ('allow', 'step_up')
    """

    default: Verdict = "step_up"
    types: Mapping[str, Verdict] = field(default_factory=dict)
    file: str = ""  # the pack that declared it, for messages

    def floor(self, event_type: str) -> Verdict:
        return self.types.get(event_type, self.default)


@dataclass(frozen=True, slots=True)
class Offer:
    id: str
    kind: ActionKind
    name: str
    value: float  # expected margin if accepted
    channels: frozenset[str]
    treatments: Mapping[str, str]  # channel -> what the channel shows
    eligibility: Condition = Condition()  # may the customer have it at all
    applicability: Condition = Condition()  # does it fit this moment
    suitability: Condition = Condition()  # is it right for the customer now
    levers: Mapping[str, float] = field(default_factory=dict)  # business weights, multiplied
    valid_from: float | None = None
    valid_until: float | None = None
    contact: ContactPolicy = ContactPolicy()
    # Offer reports (engine/decide/offerreport.py): the bank's product codes a conversion of
    # this offer names (besides the offer id), and how long after it a conversion counts.
    products: tuple[str, ...] = ()
    attribution_s: int | None = None  # None: the setting (BEACON_OFFER_ATTRIBUTION_S)

    @property
    def stages(self) -> tuple[tuple[str, tuple[Clause, ...]], ...]:
        return (
            ("eligibility", self.eligibility.clauses),
            ("applicability", self.applicability.clauses),
            ("suitability", self.suitability.clauses),
        )

    @property
    def lever(self) -> float:
        product = 1.0
        for weight in self.levers.values():
            product *= weight
        return product


@dataclass(frozen=True, slots=True)
class Fired:
    rule: RiskRule
    reason: str
    values: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Dropped:
    """An offer that did not make it, the stage that dropped it and why."""

    id: str
    stage: str  # channel, validity, eligibility, applicability, suitability, risk, contact_policy, rank
    why: str
    refs: tuple[str, ...] = ()  # what the deciding clause read ...
    sources: Sources | None = None  # ... looked up only when the explanation is written

    @property
    def values(self) -> dict[str, Any]:
        if self.sources is None:
            return {}
        return {ref: lookup(ref, self.sources) for ref in self.refs}

    def short(self) -> dict[str, str]:
        return {"id": self.id, "stage": self.stage, "why": self.why}

    def to_dict(self) -> dict[str, Any]:
        return {**self.short(), "values": self.values}


@dataclass(frozen=True, slots=True)
class TypologyScore:
    id: str
    score: float
    verdict: Verdict

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "score": round(self.score, 6), "verdict": self.verdict}


@dataclass(frozen=True, slots=True)
class RuleOutcome:
    fired: tuple[Fired, ...]
    eligible: tuple[Offer, ...]
    dropped: tuple[Dropped, ...]
    typologies: tuple[TypologyScore, ...] = ()
    errors: tuple[str, ...] = ()  # rules that raised; they count as not matched


@dataclass(frozen=True)
class RuleSet:
    version: str
    risk_rules: tuple[RiskRule, ...] = ()
    offers: tuple[Offer, ...] = ()
    typologies: tuple[Typology, ...] = ()
    fallbacks: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # What a channel shows for a step_up or block verdict: {channel: {verdict: {id, text}}}.
    risk_treatments: Mapping[str, Mapping[str, Mapping[str, str]]] = field(default_factory=dict)
    lists: Mapping[str, frozenset[str]] = field(default_factory=dict)
    needs: Needs = field(default_factory=Needs)
    origins: Mapping[str, str] = field(default_factory=dict)  # rule or offer id -> its pack file
    arbitration: Mapping[str, ArbitrationPolicy] = field(default_factory=dict)  # per channel
    when_state_unavailable: StateUnavailable = StateUnavailable()

    @cached_property
    def offer_index(self) -> dict[str, Offer]:
        return {o.id: o for o in self.offers}

    @cached_property
    def offer_ids(self) -> tuple[str, ...]:
        return tuple(o.id for o in self.offers)

    @cached_property
    def evaluator(self) -> Evaluator:
        return Evaluator(self.needs, self.lists)

    def evaluate(self, ctx: Any, sources: Sources, channel: str, now: float) -> RuleOutcome:
        errors: list[str] = []
        fired = []
        for rule in self.risk_rules:
            if _failing(rule.id, rule.when.clauses, ctx, errors) is None:
                values = {ref: lookup(ref, sources) for c in rule.when.clauses for ref in c.refs}
                fired.append(Fired(rule, rule.explain(sources), values))
        eligible: list[Offer] = []
        dropped: list[Dropped] = []
        for offer in self.offers:
            if channel not in offer.channels:
                continue  # offers not made for this channel are not news
            drop = _offer_drop(offer, ctx, sources, now, errors)
            if drop is None:
                eligible.append(offer)
            else:
                dropped.append(drop)
        typologies: tuple[TypologyScore, ...] = ()
        if fired:
            fired_ids = {f.rule.id for f in fired}
            scored = (_typology_score(t, fired_ids) for t in self.typologies)
            typologies = tuple(s for s in scored if s.score > 0)
        return RuleOutcome(tuple(fired), tuple(eligible), tuple(dropped), typologies, tuple(errors))


def _failing(rule_id: str, clauses: tuple[Clause, ...], ctx: Any, errors: list[str]) -> Clause | None:
    """The first clause that does not hold; a clause that raises counts as not holding
    and is reported: one broken rule must not break the decision."""
    for clause in clauses:
        try:
            if clause.program.execute(ctx) is not True:
                return clause
        except Exception as exc:  # noqa: BLE001 - any CEL runtime error is contained here
            errors.append(f"{rule_id}: {clause.source!r}: {type(exc).__name__}: {exc}")
            return clause
    return None


def _offer_drop(offer: Offer, ctx: Any, sources: Sources, now: float, errors: list[str]) -> Dropped | None:
    if (offer.valid_from is not None and now < offer.valid_from) or (
        offer.valid_until is not None and now >= offer.valid_until
    ):
        return Dropped(offer.id, "validity", "outside its validity window")
    for stage, clauses in offer.stages:
        n_errors = len(errors)
        failing = _failing(offer.id, clauses, ctx, errors)
        if failing is not None:
            why = errors[-1].split(": ", 1)[1] if len(errors) > n_errors else f"{failing.source} is false"
            return Dropped(offer.id, stage, why, failing.refs, sources)
    return None


def _typology_score(typology: Typology, fired: set[str]) -> TypologyScore:
    score = min(sum(w for rule_id, w in typology.weights.items() if rule_id in fired), 1.0)
    return TypologyScore(typology.id, score, typology.verdict(score))
