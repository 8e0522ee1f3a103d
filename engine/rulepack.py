"""Rule packs: YAML files in ``rules/`` with CEL conditions, validated into typed rules.

A pack is refused as a whole, with a message naming the file, the rule id and the
problem (syntax error, unknown variable or feature, duplicate id, missing treatment
for a channel, bad severity or action); whatever was running stays in force.

Conditions see ``event`` (the event's fields), ``features`` (engine.features),
``scores`` (fraud, churn, offer), ``profile``, ``channel`` and ``lists`` (named lists).

>>> pack = '''
... kind: risk
... rules:
...   - id: big_cash
...     severity: medium
...     when: event.type == "withdrawal" && features.amount >= 500
...     reason: "withdrawal of {amount:.2f}"
...     action: review
... '''
>>> rules = parse_pack(pack, "inline.yaml", frozenset({"atm"}))
>>> rules.risk_rules[0].id, rules.risk_rules[0].condition(cel_context({"type": "withdrawal"},
...     {"amount": 600.0}, {}, {}, "atm"))
('big_cash', True)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cel
import yaml

from engine.decision import VERDICT_ORDER
from engine.errors import BeaconError
from engine.rules import SEVERITIES, Condition, Offer, RiskRule

ROOTS = frozenset({"event", "features", "scores", "profile", "channel", "lists"})
OFFER_KINDS = ("offer", "service", "retention")
_COMPREHENSION = re.compile(r"\.(?:all|exists|exists_one|map|filter)\(\s*([A-Za-z_]\w*)\s*,")
_FEATURE_REF = re.compile(r"\bfeatures\.([A-Za-z_]\w*)")


class RulePackError(BeaconError):
    """A rule pack is invalid; the message names the file, the rule and the problem."""


@dataclass(frozen=True)
class PackContents:
    risk_rules: tuple[RiskRule, ...] = ()
    offers: tuple[Offer, ...] = ()
    fallbacks: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    lists: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def cel_context(
    event: Mapping[str, Any],
    features: Mapping[str, Any],
    scores: Mapping[str, Any],
    profile: Mapping[str, Any],
    channel: str,
    lists: Mapping[str, Iterable[str]] | None = None,
) -> dict[str, Any]:
    """The evaluation context: built once per event and shared by every rule."""
    ctx = cel.Context(
        {
            "event": dict(event),
            "features": {k: list(v) if isinstance(v, tuple) else v for k, v in features.items()},
            "scores": dict(scores),
            "profile": dict(profile),
            "channel": channel,
            "lists": {k: list(v) for k, v in (lists or {}).items()},
        }
    )
    return {"cel": ctx}


def load_packs(
    folder: Path, channels: frozenset[str], feature_names: frozenset[str] | None = None
) -> PackContents:
    """Load every ``*.yaml`` pack in ``folder``; ids must be unique across packs."""
    merged = PackContents()
    seen: dict[str, str] = {}
    for path in sorted(folder.glob("*.yaml")):
        pack = parse_pack(path.read_text(encoding="utf-8"), path.name, channels, feature_names)
        for rule_id in [r.id for r in pack.risk_rules] + [o.id for o in pack.offers]:
            if rule_id in seen:
                raise RulePackError(f"{path.name}: rule {rule_id}: duplicate id (also in {seen[rule_id]})")
            seen[rule_id] = path.name
        merged = PackContents(
            merged.risk_rules + pack.risk_rules,
            merged.offers + pack.offers,
            {**merged.fallbacks, **pack.fallbacks},
            {**merged.lists, **pack.lists},
        )
    return merged


def parse_pack(
    text: str, name: str, channels: frozenset[str], feature_names: frozenset[str] | None = None
) -> PackContents:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RulePackError(f"{name}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or data.get("kind") not in ("risk", "offers"):
        raise RulePackError(f"{name}: a pack is a mapping with kind: risk or kind: offers")
    checker = _Checker(name, channels, feature_names)
    lists = {str(k): tuple(str(i) for i in v) for k, v in (data.get("lists") or {}).items()}
    if data["kind"] == "risk":
        _known_keys(data, {"kind", "rules", "lists"}, name, "pack")
        ids = _unique_ids(data.get("rules") or [], name)
        return PackContents(risk_rules=tuple(checker.risk_rule(r) for r in ids), lists=lists)
    _known_keys(data, {"kind", "offers", "fallbacks", "lists"}, name, "pack")
    ids = _unique_ids(data.get("offers") or [], name)
    fallbacks = {str(ch): {"id": str(fb["id"]), "text": str(fb.get("text", ""))}
                 for ch, fb in (data.get("fallbacks") or {}).items()}  # fmt: skip
    return PackContents(offers=tuple(checker.offer(o) for o in ids), fallbacks=fallbacks, lists=lists)


def _unique_ids(items: list[Any], name: str) -> list[dict[str, Any]]:
    seen: set[str] = set()
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            raise RulePackError(f"{name}: every rule needs a string id (got {item!r:.60})")
        if item["id"] in seen:
            raise RulePackError(f"{name}: rule {item['id']}: duplicate id")
        seen.add(item["id"])
    return items


def _known_keys(item: Mapping[str, Any], allowed: set[str], name: str, what: str) -> None:
    unknown = set(item) - allowed
    if unknown:
        raise RulePackError(f"{name}: {what}: unknown key(s) {', '.join(sorted(unknown))}")


@dataclass(frozen=True)
class _Checker:
    name: str
    channels: frozenset[str]
    feature_names: frozenset[str] | None

    def fail(self, rule_id: str, problem: str) -> RulePackError:
        return RulePackError(f"{self.name}: rule {rule_id}: {problem}")

    def condition(self, rule_id: str, source: Any) -> Condition:
        if not isinstance(source, str) or not source.strip():
            raise self.fail(rule_id, "condition must be a CEL expression string")
        try:
            program = cel.compile(source)
        except ValueError as exc:
            raise self.fail(rule_id, f"condition does not compile: {exc}") from exc
        bound = set(_COMPREHENSION.findall(source))
        unknown = set(program.variables()) - ROOTS - bound
        if unknown:
            raise self.fail(rule_id, f"unknown variable(s) {', '.join(sorted(unknown))}")
        if self.feature_names is not None:
            missing = set(_FEATURE_REF.findall(source)) - self.feature_names
            if missing:
                raise self.fail(rule_id, f"unknown feature(s) {', '.join(sorted(missing))}")

        def holds(ctx: Mapping[str, Any]) -> bool:
            return program.execute(ctx["cel"]) is True

        return holds

    def risk_rule(self, r: dict[str, Any]) -> RiskRule:
        rid = r["id"]
        _known_keys(r, {"id", "severity", "when", "reason", "action", "weight"}, self.name, f"rule {rid}")
        if r.get("severity") not in SEVERITIES:
            raise self.fail(rid, f"severity must be one of {', '.join(SEVERITIES)}")
        if r.get("action") not in VERDICT_ORDER:
            raise self.fail(rid, f"action must be one of {', '.join(VERDICT_ORDER)}")
        weight = r.get("weight", 0.0)
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 <= weight <= 1:
            raise self.fail(rid, "weight must be a number from 0 to 1")
        return RiskRule(rid, r["severity"], self.condition(rid, r.get("when")), str(r.get("reason", rid)),
                        r["action"], float(weight))  # fmt: skip

    def offer(self, o: dict[str, Any]) -> Offer:
        oid = o["id"]
        allowed = {"id", "kind", "name", "value", "lever", "channels", "treatments", "eligible", "max_per_7d"}
        _known_keys(o, allowed, self.name, f"rule {oid}")
        if o.get("kind") not in OFFER_KINDS:
            raise self.fail(oid, f"kind must be one of {', '.join(OFFER_KINDS)}")
        channels = frozenset(o.get("channels") or ())
        if not channels or not channels <= self.channels:
            raise self.fail(oid, f"channels must be a non-empty subset of {', '.join(sorted(self.channels))}")
        treatments = o.get("treatments") or {}
        missing = sorted(channels - set(treatments))
        if missing:
            raise self.fail(oid, f"missing treatment for channel(s) {', '.join(missing)}")
        for number in ("value", "lever"):
            value = o.get(number, 1.0)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise self.fail(oid, f"{number} must be a non-negative number")
        return Offer(
            id=oid,
            kind=o["kind"],
            name=str(o.get("name", oid)),
            value=float(o.get("value", 0.0)),
            channels=channels,
            treatments={str(k): str(v) for k, v in treatments.items()},
            condition=self.condition(oid, o.get("eligible")),
            lever=float(o.get("lever", 1.0)),
            max_per_7d=int(o.get("max_per_7d", 2)),
        )
