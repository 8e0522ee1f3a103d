"""Typed rules and their side-effect-free evaluation.

A condition is any callable from the evaluation context to bool. The built-in set
(``engine.builtin_rules``) uses Python predicates; rule packs compiled from ``rules/``
produce the same objects, so the decision pipeline does not change when they land.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.decision import ActionKind, Verdict

Context = Mapping[str, Any]
Condition = Callable[[Context], bool]
SEVERITIES = ("low", "medium", "high", "critical")


@dataclass(frozen=True, slots=True)
class RiskRule:
    id: str
    severity: str
    condition: Condition
    reason: str  # a str.format template over the features
    action: Verdict
    weight: float = 0.0  # contribution to the rule-based risk score

    def explain(self, features: Context) -> str:
        try:
            return self.reason.format_map(_Missing(features))
        except (ValueError, TypeError):
            return self.reason


@dataclass(frozen=True, slots=True)
class Offer:
    id: str
    kind: ActionKind
    name: str
    value: float  # expected margin if accepted
    channels: frozenset[str]
    treatments: Mapping[str, str]  # channel -> what the channel shows
    condition: Condition
    lever: float = 1.0  # business weighting marketing can turn
    max_per_7d: int = 2  # contact policy: impressions of this offer per customer


@dataclass(frozen=True, slots=True)
class Fired:
    rule: RiskRule
    reason: str


@dataclass(frozen=True, slots=True)
class RuleOutcome:
    fired: tuple[Fired, ...]
    eligible: tuple[Offer, ...]
    errors: tuple[str, ...] = ()  # rules that raised; they count as not matched


@dataclass(frozen=True)
class RuleSet:
    version: str
    risk_rules: tuple[RiskRule, ...]
    offers: tuple[Offer, ...]
    fallbacks: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def evaluate(self, context: Context, channel: str) -> RuleOutcome:
        errors: list[str] = []
        fired = tuple(
            Fired(r, r.explain(context["features"]))
            for r in self.risk_rules
            if _holds(r.id, r.condition, context, errors)
        )
        eligible = tuple(
            o for o in self.offers if channel in o.channels and _holds(o.id, o.condition, context, errors)
        )
        return RuleOutcome(fired, eligible, tuple(errors))


def _holds(rule_id: str, condition: Condition, context: Context, errors: list[str]) -> bool:
    # One broken rule must not break the decision: it is reported and skipped.
    try:
        return bool(condition(context))
    except Exception as exc:  # noqa: BLE001 - any rule failure is contained here
        errors.append(f"{rule_id}: {type(exc).__name__}: {exc}")
        return False


class _Missing(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "?"
