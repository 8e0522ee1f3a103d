"""Rule packs: YAML files with CEL conditions, validated into a typed :class:`RuleSet`.

A bundle (every ``*.yaml`` of a folder, or a version stored in Redis) is accepted or
refused as a whole, with a message naming the file, the rule id and the problem in
words a rule author can act on; whatever was running stays in force. See
``rules/README.md`` for the format.

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
>>> compile_bundle({"x.yaml": "kind: risk\\nrules:\\n  - {id: a, severity: bad}"}, frozenset({"atm"}), "v")
Traceback (most recent call last):
engine.rules.pack.RulePackError: x.yaml: rule a: severity must be one of low, medium, high, critical (got 'bad')
"""

from __future__ import annotations

import difflib
import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import cel
import yaml

from engine.domain.decision import VERDICT_ORDER
from engine.domain.policy import ArbitrationPolicy, PolicyError, parse_arbitration
from engine.domain.state import CONTACT_WINDOW_S
from engine.errors import BeaconError
from engine.rules.celenv import EVENT_FIELDS, HELPERS, ROOTS, SCORE_FIELDS, Needs, flatten_source, references
from engine.rules.ruleset import (
    SEVERITIES,
    Cap,
    Clause,
    Condition,
    ContactPolicy,
    Offer,
    RiskRule,
    RuleSet,
    Typology,
)

OFFER_KINDS = ("offer", "service", "retention")
_ID = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_DURATION = re.compile(r"^(\d+)\s*([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_COMPREHENSION = re.compile(r"\.(?:all|exists|exists_one|map|filter)\(\s*([A-Za-z_]\w*)\s*,")
_PACK_KEYS = {
    "risk": {"kind", "rules", "typologies", "lists", "tests"},
    "offers": {"kind", "offers", "contact_policy", "fallbacks", "arbitration", "lists", "tests"},
}


class RulePackError(BeaconError):
    """A rule pack is invalid; the message names the file, the rule and the problem."""


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
        lists=_merged_lists(parts),
        origins=seen,
        arbitration=_arbitration(parts, channels),
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


def _parse_file(name: str, text: str, channels: frozenset[str]) -> _Part:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RulePackError(f"{name}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or data.get("kind") not in _PACK_KEYS:
        raise RulePackError(f"{name}: a pack is a mapping with `kind: risk` or `kind: offers`")
    _known_keys(data, _PACK_KEYS[data["kind"]], f"{name}: pack")
    lists = _lists(name, data.get("lists"))
    check = _Checker(name, channels, frozenset(lists))
    part = _Part(name, [], [], [], {}, lists, _cases(name, data.get("tests")))
    if data["kind"] == "risk":
        part.risk = [check.risk_rule(r) for r in _items(data, "rules", name)]
        part.typologies = [check.typology(t) for t in _items(data, "typologies", name)]
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
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not _ID.match(item["id"]):
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


def _known_keys(item: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(item) - allowed)
    if unknown:
        hints = [
            f"{u} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(u, allowed, 1)) else u
            for u in unknown
        ]
        raise RulePackError(
            f"{where}: unknown key(s) {', '.join(hints)}; allowed: {', '.join(sorted(allowed))}"
        )


def parse_duration(value: Any) -> int:
    """Seconds from ``90``, ``"30s"``, ``"10m"``, ``"1h"`` or ``"7d"``.

    >>> parse_duration("10m"), parse_duration(90), parse_duration("7d")
    (600, 90, 604800)
    """
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    m = _DURATION.match(str(value).strip())
    if not m:
        raise ValueError(f"{value!r} is not a duration (use 90, 30s, 10m, 1h or 7d)")
    return int(m[1]) * _UNITS[m[2]]


def _instant(value: Any) -> float:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp()
    text = str(value).replace("Z", "+00:00")
    parsed = datetime.fromisoformat(text)
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def _number(value: Any, lo: float = 0.0, hi: float | None = None) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or value < lo
        or (hi is not None and value > hi)
    ):
        raise ValueError
    return float(value)


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


@dataclass(frozen=True)
class _Checker:
    file: str
    channels: frozenset[str]
    lists: frozenset[str]

    def fail(self, rule_id: str, problem: str) -> RulePackError:
        return RulePackError(f"{self.file}: rule {rule_id}: {problem}")

    def condition(self, rule_id: str, raw: Any, what: str, required: bool = False) -> Condition:
        if raw is None and not required:
            return Condition()
        sources = raw if isinstance(raw, list) else [raw]
        if not sources or not all(isinstance(s, str) and s.strip() for s in sources):
            raise self.fail(rule_id, f"`{what}` must be a CEL expression or a list of them")
        return Condition(tuple(self.clause(rule_id, what, " ".join(s.split())) for s in sources))

    def clause(self, rule_id: str, what: str, source: str) -> Clause:
        try:
            program = cel.compile(source)
        except ValueError as exc:
            raise self.fail(rule_id, f"`{what}` does not compile: {source}: {exc}") from exc
        try:
            flat = cel.compile(flatten_source(source))  # what runs: see celenv.flat_name
        except ValueError as exc:
            raise self.fail(
                rule_id, f"`{what}`: {source}: fields are always present, so write them without has(): {exc}"
            ) from exc
        unknown = set(program.variables()) - set(ROOTS) - set(_COMPREHENSION.findall(source))
        if unknown:
            raise self.fail(
                rule_id,
                f"`{what}`: unknown variable(s) {', '.join(sorted(unknown))}; "
                f"conditions may use {', '.join(ROOTS)}",
            )
        refs = references(source)
        for root, name, _ in refs:
            self.known_field(rule_id, what, root, name)
        for used in program.functions():
            if used in HELPERS and used == "in_list":
                self.lists_used(rule_id, what, source)
        return Clause(source, flat, tuple(sorted(_ref_path(r) for r in refs)))

    def known_field(self, rule_id: str, what: str, root: str, name: str) -> None:
        from engine.domain.features import FEATURE_NAMES  # late: features import the state layout

        known = {"event": EVENT_FIELDS, "state": FEATURE_NAMES, "scores": SCORE_FIELDS}.get(root)
        if known is not None and name not in known:
            close = difflib.get_close_matches(name, known, 1)
            hint = f" (did you mean {root}.{close[0]}?)" if close else ""
            raise self.fail(rule_id, f"`{what}`: unknown field {root}.{name}{hint}")

    def lists_used(self, rule_id: str, what: str, source: str) -> None:
        for name in re.findall(r"in_list\(\s*[\"']([^\"']+)[\"']", source):
            if name not in self.lists:
                raise self.fail(rule_id, f"`{what}`: unknown list {name!r}; declare it under `lists:`")

    def risk_rule(self, r: dict[str, Any]) -> RiskRule:
        rid = r["id"]
        _known_keys(
            r, {"id", "name", "severity", "when", "reason", "action", "suppress"}, f"{self.file}: rule {rid}"
        )
        if r.get("severity") not in SEVERITIES:
            raise self.fail(
                rid, f"severity must be one of {', '.join(SEVERITIES)} (got {r.get('severity')!r})"
            )
        if r.get("action") not in VERDICT_ORDER:
            raise self.fail(
                rid, f"action must be one of {', '.join(VERDICT_ORDER)} (got {r.get('action')!r})"
            )
        reason = str(r.get("reason", rid))
        for root, name, _ in references(reason):
            self.known_field(rid, "reason", root, name)
        return RiskRule(
            id=rid,
            name=str(r.get("name", rid)),
            severity=r["severity"],
            when=self.condition(rid, r.get("when"), "when", required=True),
            reason=reason,
            action=r["action"],
            suppress_s=self.duration(rid, "suppress", r.get("suppress", 0)),
        )

    def typology(self, t: dict[str, Any]) -> Typology:
        tid = t["id"]
        _known_keys(t, {"id", "name", "rules", "review", "block"}, f"{self.file}: typology {tid}")
        weights = t.get("rules")
        try:
            if not isinstance(weights, dict) or not weights:
                raise ValueError
            parsed = {str(k): _number(v, 0.0, 1.0) for k, v in weights.items()}
            review = _number(t.get("review"), 0.0, 1.0)
            block = _number(t["block"], 0.0, 1.0) if t.get("block") is not None else math.inf
        except (ValueError, TypeError):
            raise RulePackError(
                f"{self.file}: typology {tid}: `rules` maps rule ids to weights from 0 to 1, "
                "and `review` and `block` are thresholds from 0 to 1"
            ) from None
        if not 0 < review <= block:
            raise RulePackError(f"{self.file}: typology {tid}: need 0 < review <= block")
        return Typology(tid, str(t.get("name", tid)), parsed, review, block)

    def duration(self, rid: str, what: str, raw: Any) -> int:
        try:
            return parse_duration(raw)
        except ValueError as exc:
            raise self.fail(rid, f"`{what}`: {exc}") from None

    def cap(self, rid: str, what: str, raw: Any) -> Cap | None:
        if raw is None:
            return None
        if not isinstance(raw, dict) or set(raw) != {"max", "window"}:
            raise self.fail(rid, f"`{what}` is {{max: N, window: 7d}}")
        window = self.duration(rid, what, raw["window"])
        if not isinstance(raw["max"], int) or raw["max"] < 1 or not 0 < window <= CONTACT_WINDOW_S:
            raise self.fail(rid, f"`{what}`: max must be a whole number >= 1 and window at most 7d")
        return Cap(raw["max"], window, f"{raw['max']} per {raw['window']}")

    def policy(self, rid: str, raw: Any, base: ContactPolicy) -> ContactPolicy:
        if not isinstance(raw, dict):
            raise self.fail(rid, "`contact` must be a mapping")
        allowed = {"max", "window", "per_offer", "per_channel", "overall", "decline_cooldown", "daily_cap"}
        _known_keys(raw, allowed, f"{self.file}: rule {rid}: contact policy")
        per_offer = (
            {"max": raw["max"], "window": raw.get("window", "7d")} if "max" in raw else raw.get("per_offer")
        )
        daily = raw.get("daily_cap", base.daily_cap)
        if not isinstance(daily, int) or isinstance(daily, bool) or daily < 0:
            raise self.fail(rid, "`daily_cap` must be a whole number (0: no cap)")
        return ContactPolicy(
            per_offer=self.cap(rid, "per_offer", per_offer) or base.per_offer,
            per_channel=self.cap(rid, "per_channel", raw.get("per_channel")) or base.per_channel,
            overall=self.cap(rid, "overall", raw.get("overall")) or base.overall,
            decline_cooldown_s=self.duration(
                rid, "decline_cooldown", raw.get("decline_cooldown", base.decline_cooldown_s)
            ),
            daily_cap=daily,
        )

    def offer(self, o: dict[str, Any], default_policy: ContactPolicy) -> Offer:
        oid = o["id"]
        allowed = {
            "id",
            "kind",
            "name",
            "value",
            "levers",
            "valid",
            "channels",
            "treatments",
            "eligibility",
            "applicability",
            "suitability",
            "contact",
        }
        _known_keys(o, allowed, f"{self.file}: rule {oid}")
        if o.get("kind") not in OFFER_KINDS:
            raise self.fail(oid, f"kind must be one of {', '.join(OFFER_KINDS)} (got {o.get('kind')!r})")
        channels = frozenset(o.get("channels") or ())
        if not channels or not channels <= self.channels:
            raise self.fail(oid, f"channels must be a non-empty list from {', '.join(sorted(self.channels))}")
        treatments = o.get("treatments") or {}
        missing = sorted(channels - set(treatments))
        if missing:
            raise self.fail(oid, f"missing treatment for channel(s) {', '.join(missing)}")
        extra = sorted(set(treatments) - channels)
        if extra:
            raise self.fail(oid, f"treatment for channel(s) {', '.join(extra)} not listed in `channels`")
        try:
            value = _number(o.get("value", 0.0))
            levers = {str(k): _number(v) for k, v in (o.get("levers") or {}).items()}
        except (ValueError, AttributeError):
            raise self.fail(oid, "value and every lever must be non-negative numbers") from None
        valid_from, valid_until = self.validity(oid, o.get("valid") or {})
        return Offer(
            id=oid,
            kind=o["kind"],
            name=str(o.get("name", oid)),
            value=value,
            channels=channels,
            treatments={str(k): str(v) for k, v in treatments.items()},
            eligibility=self.condition(oid, o.get("eligibility"), "eligibility"),
            applicability=self.condition(oid, o.get("applicability"), "applicability"),
            suitability=self.condition(oid, o.get("suitability"), "suitability"),
            levers=levers,
            valid_from=valid_from,
            valid_until=valid_until,
            contact=self.policy(oid, o.get("contact") or {}, default_policy),
        )

    def validity(self, oid: str, raw: Any) -> tuple[float | None, float | None]:
        if not isinstance(raw, dict) or set(raw) - {"from", "until"}:
            raise self.fail(oid, "`valid` is {from: 2026-01-01, until: 2027-01-01}")
        try:
            lo = _instant(raw["from"]) if raw.get("from") is not None else None
            hi = _instant(raw["until"]) if raw.get("until") is not None else None
        except ValueError as exc:
            raise self.fail(oid, f"`valid`: {exc}") from None
        if lo is not None and hi is not None and hi <= lo:
            raise self.fail(oid, "`valid`: until must be after from")
        return lo, hi

    def fallbacks(self, raw: Any) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for ch, fb in (raw or {}).items():
            if ch not in self.channels or not isinstance(fb, dict) or not _ID.match(str(fb.get("id", ""))):
                raise RulePackError(f"{self.file}: fallback for {ch}: needs a known channel and {{id, text}}")
            out[str(ch)] = {"id": str(fb["id"]), "text": str(fb.get("text", ""))}
        return out


def _ref_path(ref: tuple[str, str, str | None]) -> str:
    root, name, sub = ref
    return (
        f"{root}.{name}.{sub}"
        if sub
        and (root, name)
        in {("event", "attributes"), ("event", "geo"), ("profile", "home_geo"), ("scores", "offer")}
        else f"{root}.{name}"
    )
