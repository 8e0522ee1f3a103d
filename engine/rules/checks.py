"""Per-rule validation of rule packs: every field of a risk rule, typology, offer and
contact policy, and every CEL reference a condition makes, checked against what exists.

:class:`Checker` checks one file's entries and raises :class:`RulePackError` naming the
file, the rule id and the problem; :mod:`engine.rules.pack` reads the files, runs it
over every entry and checks the bundle as a whole.

>>> check = Checker("x.yaml", frozenset({"atm"}), frozenset())
>>> check.clause("a", "when", "state.amount > 10.0").refs
('state.amount',)
>>> try:
...     check.clause("a", "when", "state.amout > 10.0")
... except RulePackError as exc:
...     print(exc)
x.yaml: rule a: `when`: unknown field state.amout (did you mean state.amount?)
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import cel

from engine.domain.decision import VERDICT_ORDER
from engine.domain.events import PRODUCT
from engine.domain.features import FEATURE_NAMES
from engine.domain.state import CONTACT_WINDOW_S
from engine.errors import BeaconError
from engine.rules.celenv import EVENT_FIELDS, HELPERS, ROOTS, SCORE_FIELDS, flatten_source, references
from engine.rules.ruleset import (
    MONEY_MOVEMENT,
    SEVERITIES,
    Cap,
    Clause,
    Condition,
    ContactPolicy,
    Offer,
    RiskRule,
    StateUnavailable,
    Typology,
)

OFFER_KINDS = ("offer", "service", "retention")
RULE_ID = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_DURATION = re.compile(r"^(\d+)\s*([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_COMPREHENSION = re.compile(r"\.(?:all|exists|exists_one|map|filter)\(\s*([A-Za-z_]\w*)\s*,")


class RulePackError(BeaconError):
    """A rule pack is invalid; the message names the file, the rule and the problem."""


def known_keys(item: Mapping[str, Any], allowed: set[str], where: str) -> None:
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


@dataclass(frozen=True)
class Checker:
    """Checks the entries of one pack file; ``lists`` are the list names it declares."""

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
        known_keys(
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
        known_keys(t, {"id", "name", "rules", "review", "block"}, f"{self.file}: typology {tid}")
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
        known_keys(raw, allowed, f"{self.file}: rule {rid}: contact policy")
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
            "products",
            "attribution",
        }
        known_keys(o, allowed, f"{self.file}: rule {oid}")
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
            products=self.products(oid, o.get("products")),
            attribution_s=None
            if o.get("attribution") is None
            else self.duration(oid, "attribution", o["attribution"]),
        )

    def products(self, oid: str, raw: Any) -> tuple[str, ...]:
        """The product codes a conversion of the offer names: a list of short codes."""
        if raw is None:
            return ()
        if not isinstance(raw, list) or not all(isinstance(p, str) and PRODUCT.fullmatch(p) for p in raw):
            raise self.fail(oid, "`products` is a list of product codes (1-64 characters of [A-Za-z0-9_.:-])")
        return tuple(raw)

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

    def risk_treatments(self, raw: Any) -> dict[str, dict[str, dict[str, str]]]:
        """``{channel: {step_up|block: {id, text}}}``: what the channel does with a risky
        interaction (decline and retain the card, an OTP challenge...)."""
        out: dict[str, dict[str, dict[str, str]]] = {}
        for ch, by_verdict in (raw or {}).items():
            if ch not in self.channels or not isinstance(by_verdict, dict):
                raise RulePackError(f"{self.file}: risk_treatments: {ch}: needs a known channel and verdicts")
            for verdict, t in by_verdict.items():
                if verdict not in ("step_up", "block") or not isinstance(t, dict):
                    raise RulePackError(
                        f"{self.file}: risk_treatments: {ch}: {verdict}: step_up or block, {{id, text}}"
                    )
                if not RULE_ID.match(str(t.get("id", ""))):
                    raise RulePackError(f"{self.file}: risk_treatments: {ch}: {verdict}: needs an id")
                out.setdefault(str(ch), {})[str(verdict)] = {
                    "id": str(t["id"]),
                    "text": str(t.get("text", "")),
                }
        return out

    def fallbacks(self, raw: Any) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for ch, fb in (raw or {}).items():
            if (
                ch not in self.channels
                or not isinstance(fb, dict)
                or not RULE_ID.match(str(fb.get("id", "")))
            ):
                raise RulePackError(f"{self.file}: fallback for {ch}: needs a known channel and {{id, text}}")
            out[str(ch)] = {"id": str(fb["id"]), "text": str(fb.get("text", ""))}
        return out


def state_unavailable(file: str, raw: Any) -> StateUnavailable:
    """A risk pack's ``when_state_unavailable``: ``default`` (required) and ``types``, a
    verdict per event type. Money movement may not fall below step_up: fail closed."""
    where = f"{file}: when_state_unavailable"
    if not isinstance(raw, dict):
        raise RulePackError(f"{where}: a mapping with `default` and `types`")
    known_keys(raw, {"default", "types"}, where)
    types = raw.get("types") or {}
    if not isinstance(types, dict):
        raise RulePackError(f"{where}: `types` maps an event type to a verdict")
    for name, verdict in [("default", raw.get("default")), *((f"type {t}", v) for t, v in types.items())]:
        if verdict not in VERDICT_ORDER:
            allowed = ", ".join(VERDICT_ORDER)
            raise RulePackError(f"{where}: {name} must be one of {allowed} (got {verdict!r})")
    policy = StateUnavailable(raw["default"], {str(t): v for t, v in types.items()}, file)
    open_ = sorted(t for t in MONEY_MOVEMENT if VERDICT_ORDER[policy.floor(t)] < VERDICT_ORDER["step_up"])
    if open_:
        raise RulePackError(
            f"{where}: money movement must step up or block without customer state; "
            f"{', '.join(f'{t} is {policy.floor(t)}' for t in open_)}"
        )
    return policy


def unknown_types(policy: StateUnavailable, event_types: frozenset[str]) -> None:
    """Refuse event types the settings do not know (a typo would silently use the default)."""
    unknown = sorted(set(policy.types) - event_types)
    if unknown:
        hints = [
            f"{u} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(u, event_types, 1)) else u
            for u in unknown
        ]
        where = f"{policy.file}: when_state_unavailable"
        raise RulePackError(f"{where}: unknown event type(s) {', '.join(hints)}")


def _ref_path(ref: tuple[str, str, str | None]) -> str:
    root, name, sub = ref
    return (
        f"{root}.{name}.{sub}"
        if sub
        and (root, name)
        in {("event", "attributes"), ("event", "geo"), ("profile", "home_geo"), ("scores", "offer")}
        else f"{root}.{name}"
    )
