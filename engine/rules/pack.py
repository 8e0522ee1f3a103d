"""Rule packs: YAML files with CEL conditions, validated into a typed :class:`RuleSet`.

A bundle (every ``*.yaml`` of a folder, or a version stored in Redis) is accepted or
refused as a whole, with a message naming the file, the rule id and the problem in
words a rule author can act on; whatever was running stays in force. See
``rules/README.md`` for the format. Each entry is checked by
:class:`engine.rules.checks.Checker`; this module reads the files and checks the bundle
as a whole (unique ids, lists, typologies, fallbacks, arbitration).

>>> bundle = {"risk.yaml": '''
... kind: risk
... rules:
...   - id: big_cash
...     severity: medium
...     when: event.type == "withdrawal" && event.amount >= 500.0
...     reason: "withdrawal of {event.amount:.2f}"
...     action: review
... '''}
>>> rs = compile_bundle(bundle, frozenset({"atm"}), "v1").rules
>>> [r.id for r in rs.risk_rules], sorted(rs.needs.event)
(['big_cash'], ['amount', 'type'])
>>> bad = {"x.yaml": "kind: risk\\nrules: [{id: a, severity: bad}]"}
>>> try:
...     compile_bundle(bad, frozenset({"atm"}), "v")
... except RulePackError as exc:
...     print(exc)
x.yaml: rule a: severity must be one of low, medium, high, critical (got 'bad')
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from engine.domain.policy import ArbitrationPolicy, PolicyError, parse_arbitration
from engine.rules.celenv import Needs
from engine.rules.checks import RULE_ID, Checker, RulePackError, known_keys, state_unavailable
from engine.rules.ruleset import ContactPolicy, Offer, RiskRule, RuleSet, StateUnavailable, Typology

__all__ = ["Case", "Compiled", "RulePackError", "bundle_digest", "compile_bundle", "read_bundle"]

_PACK_KEYS = {
    "risk": {"kind", "rules", "typologies", "lists", "tests", "when_state_unavailable", "risk_treatments"},
    "offers": {"kind", "offers", "contact_policy", "fallbacks", "arbitration", "lists", "tests"},
}


@dataclass(frozen=True)
class Case:
    """A pack's own test: given event + state + profile + scores, expect these results."""

    file: str
    name: str
    spec: Mapping[str, Any]


@dataclass(frozen=True)
class Compiled:
    rules: RuleSet
    cases: tuple[Case, ...]
    digest: str  # of the bundle's text: the same files always give the same digest


def read_bundle(folder: Path) -> dict[str, str]:
    """Every ``*.yaml`` file of a folder, by name."""
    files = {p.name: p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.yaml"))}
    if not files:
        raise RulePackError(f"{folder}: no rule packs (*.yaml) found")
    return files


def bundle_digest(files: Mapping[str, str]) -> str:
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + files[name].encode() + b"\0")
    return h.hexdigest()[:12]


def compile_bundle(files: Mapping[str, str], channels: frozenset[str], version: str) -> Compiled:
    """Validate every pack of a bundle into one rule set; refuse the bundle on any problem."""
    parts = [_parse_file(name, text, channels) for name, text in sorted(files.items())]
    seen: dict[str, str] = {}
    for part in parts:
        for rid in [r.id for r in part.risk] + [o.id for o in part.offers]:
            if rid in seen:
                raise RulePackError(f"{part.file}: rule {rid}: duplicate id (also in {seen[rid]})")
            seen[rid] = part.file
    risk = tuple(r for p in parts for r in p.risk)
    typologies = tuple(t for p in parts for t in p.typologies)
    _check_typologies(parts, {r.id for r in risk})
    fallbacks = {ch: fb for p in parts for ch, fb in p.fallbacks.items()}
    treatments = {ch: t for p in parts for ch, t in p.treatments.items()}
    offers = tuple(o for p in parts for o in p.offers)
    if offers:
        missing = sorted(channels - set(fallbacks))
        if missing:
            raise RulePackError(f"offers: no fallback for channel(s) {', '.join(missing)}")
    sources = [c.source for r in risk for c in r.when.clauses]
    sources += [
        c.source
        for o in offers
        for s in ("eligibility", "applicability", "suitability")
        for c in getattr(o, s).clauses
    ]
    rules = RuleSet(
        version=version,
        risk_rules=risk,
        offers=offers,
        typologies=typologies,
        fallbacks=fallbacks,
        risk_treatments=treatments,
        lists=_merged_lists(parts),
        origins=seen,
        arbitration=_arbitration(parts, channels),
        when_state_unavailable=_state_unavailable(parts),
        needs=Needs.of(sources),  # reasons are filled from Python values, not CEL
    )
    return Compiled(rules, tuple(c for p in parts for c in p.cases), bundle_digest(files))


@dataclass
class _Part:
    file: str
    risk: list[RiskRule]
    offers: list[Offer]
    typologies: list[Typology]
    fallbacks: dict[str, dict[str, str]]
    lists: dict[str, frozenset[str]]
    cases: list[Case]
    arbitration: Any = None
    unavailable: StateUnavailable | None = None
    treatments: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)


def _parse_file(name: str, text: str, channels: frozenset[str]) -> _Part:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RulePackError(f"{name}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or data.get("kind") not in _PACK_KEYS:
        raise RulePackError(f"{name}: a pack is a mapping with `kind: risk` or `kind: offers`")
    known_keys(data, _PACK_KEYS[data["kind"]], f"{name}: pack")
    lists = _lists(name, data.get("lists"))
    check = Checker(name, channels, frozenset(lists))
    part = _Part(name, [], [], [], {}, lists, _cases(name, data.get("tests")))
    if data["kind"] == "risk":
        part.risk = [check.risk_rule(r) for r in _items(data, "rules", name)]
        part.typologies = [check.typology(t) for t in _items(data, "typologies", name)]
        part.treatments = check.risk_treatments(data.get("risk_treatments"))
        if "when_state_unavailable" in data:
            part.unavailable = state_unavailable(name, data["when_state_unavailable"])
    else:
        default = check.policy("contact_policy", data.get("contact_policy") or {}, ContactPolicy())
        part.offers = [check.offer(o, default) for o in _items(data, "offers", name)]
        part.fallbacks = check.fallbacks(data.get("fallbacks") or {})
        part.arbitration = data.get("arbitration")
    return part


def _items(data: Mapping[str, Any], key: str, name: str) -> list[dict[str, Any]]:
    items = data.get(key) or []
    if not isinstance(items, list):
        raise RulePackError(f"{name}: `{key}` must be a list")
    seen: set[str] = set()
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not RULE_ID.match(item["id"]):
            raise RulePackError(
                f"{name}: every entry of `{key}` needs an id of lower-case letters, digits and _ "
                f"(got {str(item)[:60]})"
            )
        if item["id"] in seen:
            raise RulePackError(f"{name}: rule {item['id']}: duplicate id")
        seen.add(item["id"])
    return items


def _lists(name: str, raw: Any) -> dict[str, frozenset[str]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(v, list) for v in raw.values()):
        raise RulePackError(f"{name}: `lists` maps a list name to a list of values")
    return {str(k): frozenset(str(i) for i in v) for k, v in raw.items()}


def _cases(name: str, raw: Any) -> list[Case]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(c, dict) for c in raw):
        raise RulePackError(f"{name}: `tests` must be a list of cases")
    return [Case(name, str(c.get("name", f"case {i + 1}")), c) for i, c in enumerate(raw)]


def _arbitration(parts: list[_Part], channels: frozenset[str]) -> dict[str, ArbitrationPolicy]:
    sections = [(p.file, p.arbitration) for p in parts if p.arbitration is not None]
    if len(sections) > 1:
        raise RulePackError(f"{sections[1][0]}: `arbitration` is declared twice (also in {sections[0][0]})")
    if not sections:
        return {}
    try:
        return parse_arbitration(sections[0][1], channels)
    except PolicyError as exc:
        raise RulePackError(f"{sections[0][0]}: {exc}") from None


def _state_unavailable(parts: list[_Part]) -> StateUnavailable:
    """The bundle's one ``when_state_unavailable``; without one, every type steps up."""
    declared = [p.unavailable for p in parts if p.unavailable is not None]
    if len(declared) > 1:
        raise RulePackError(
            f"{declared[1].file}: `when_state_unavailable` is declared twice (also in {declared[0].file})"
        )
    return declared[0] if declared else StateUnavailable()


def _merged_lists(parts: list[_Part]) -> dict[str, frozenset[str]]:
    merged: dict[str, frozenset[str]] = {}
    owner: dict[str, str] = {}
    for part in parts:
        for name, values in part.lists.items():
            if name in merged:
                raise RulePackError(f"{part.file}: list {name}: declared twice (also in {owner[name]})")
            merged[name], owner[name] = values, part.file
    return merged


def _check_typologies(parts: list[_Part], risk_ids: set[str]) -> None:
    for part in parts:
        for t in part.typologies:
            unknown = sorted(set(t.weights) - risk_ids)
            if unknown:
                raise RulePackError(f"{part.file}: typology {t.id}: unknown rule(s) {', '.join(unknown)}")
