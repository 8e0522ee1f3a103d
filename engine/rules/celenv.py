"""The CEL environment of rule conditions: variables, helper functions, and references.

Variables: ``event`` (the interaction), ``state`` (the customer's rolling state as
features, see engine/domain/features.py), ``profile`` (static attributes), ``scores``
(``fraud``, ``churn``, ``offer``), ``now`` (the event's time: decisions are made as
of the event, so a replay decides the same) and ``channel``.

Converting Python values into CEL values costs ~1-2 us per field, far more than
evaluating a rule (~1 us), so the context carries only the fields the loaded rules
read (:class:`Needs`), as flat variables (:func:`flatten_source`), set once per event
on one reused context shared by every rule.

>>> needs = Needs.of(["state.n_10m >= 2 && geo_km(event.geo, profile.home_geo) > 100.0"])
>>> sorted(needs.state), sorted(needs.event), sorted(needs.profile)
(['n_10m'], ['geo'], ['home_geo'])
>>> ev = Evaluator(needs, {})
>>> ctx = ev.bind({"geo": {"lat": 51.5, "lon": -0.13}}, {"n_10m": 2},
...               {"home_geo": {"lat": 48.86, "lon": 2.35}}, {}, 0.0, "atm")
>>> cel.compile(flatten_source("geo_km(event.geo, profile.home_geo)")).execute(ctx) > 340
True
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property, lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import cel

ROOTS = ("event", "state", "profile", "scores", "now", "channel")
EVENT_FIELDS = (
    "event_id",
    "customer_id",
    "channel",
    "type",
    "ts",
    "amount",
    "currency",
    "device_id",
    "terminal_id",
    "session_id",
    "geo",
    "attributes",
)
SCORE_FIELDS = ("fraud", "churn", "offer")
PROFILE_DEFAULTS: dict[str, Any] = {
    "segment": "unknown",
    "age_band": "unknown",
    "income_band": "unknown",
    "kyc_risk": "unknown",
    "timezone": "UTC",
    "products": [],
    "home_geo": None,
    "tenure_months": 0,
}
HELPERS = ("geo_km", "local_hour", "local_weekday", "age_s", "in_list")
_EARTH_KM = 6371.0088
_REF = re.compile(r"\b(event|state|profile|scores)\.([A-Za-z_]\w*)(?:\.([A-Za-z_]\w*))?")
_STRING = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")


def references(source: str) -> set[tuple[str, str, str | None]]:
    """(root, field, sub-field) read by an expression, string literals ignored.

    >>> sorted(references('event.attributes.new_payee == true && state.amount > 1.0 && "state.x" != ""'))
    [('event', 'attributes', 'new_payee'), ('state', 'amount', None)]
    """
    return {(m[1], m[2], m[3]) for m in _REF.finditer(_STRING.sub('""', source))}


@dataclass(frozen=True)
class Needs:
    """The fields the loaded rules read, per variable."""

    event: frozenset[str] = frozenset()
    attributes: frozenset[str] = frozenset()
    state: frozenset[str] = frozenset()
    profile: frozenset[str] = frozenset()
    scores: frozenset[str] = frozenset()

    @cached_property
    def profile_order(self) -> tuple[str, ...]:
        """The profile fields read, sorted once (each audit record lists them in this order)."""
        return tuple(sorted(self.profile))

    @classmethod
    def of(cls, sources: Iterable[str]) -> Needs:
        found: dict[str, set[str]] = {
            "event": set(),
            "attributes": set(),
            "state": set(),
            "profile": set(),
            "scores": set(),
        }
        for source in sources:
            for root, name, sub in references(source):
                found[root].add(name)
                if root == "event" and name == "attributes" and sub:
                    found["attributes"].add(sub)
        return cls(**{k: frozenset(v) for k, v in found.items()})


def flat_name(root: str, name: str, sub: str | None = None) -> str:
    """The CEL variable a reference is compiled to: ``state.n_10m`` reads ``state__n_10m``.

    Top-level variables convert to CEL about twice as fast as fields of a map, and the
    conversion, not the evaluation, is what a rule set costs per event.
    """
    if root == "event" and name == "attributes" and sub:
        return f"event__attributes__{sub}"
    return f"{root}__{name}"


def flatten_source(source: str) -> str:
    """Rewrite references to the flat variables (string literals are left alone).

    >>> flatten_source('state.n_10m > 1 && event.attributes.x == "state.y" && event.geo.lat > 0.0')
    'state__n_10m > 1 && event__attributes__x == "state.y" && event__geo.lat > 0.0'
    """
    out, last = [], 0
    for lit in _STRING.finditer(source):
        out.append(_REF.sub(_flat_ref, source[last : lit.start()]))
        out.append(lit.group(0))
        last = lit.end()
    out.append(_REF.sub(_flat_ref, source[last:]))
    return "".join(out)


def _flat_ref(m: re.Match[str]) -> str:
    root, name, sub = m[1], m[2], m[3]
    if root == "event" and name == "attributes" and sub:
        return flat_name(root, name, sub)
    return flat_name(root, name) + (f".{sub}" if sub else "")


def context_values(
    needs: Needs,
    event: Mapping[str, Any],
    state: Mapping[str, Any],
    profile: Mapping[str, Any],
    scores: Mapping[str, Any],
    now: float,
    channel: str,
) -> dict[str, Any]:
    """The flat variables of one event: only the fields the rule set reads."""
    return _Layout.of(needs).values(event, state, profile, scores, now, channel)


@dataclass(frozen=True)
class _Layout:
    """Variable names worked out once per rule set, not once per event."""

    event: tuple[tuple[str, str], ...]
    attributes: tuple[tuple[str, str], ...]
    state: tuple[tuple[str, str], ...]
    profile: tuple[tuple[str, str, Any], ...]
    scores: tuple[tuple[str, str, Any], ...]

    @classmethod
    def of(cls, needs: Needs) -> _Layout:
        return cls(
            event=tuple((flat_name("event", n), n) for n in sorted(needs.event) if n != "attributes"),
            attributes=tuple((flat_name("event", "attributes", n), n) for n in sorted(needs.attributes)),
            state=tuple((flat_name("state", n), n) for n in sorted(needs.state)),
            profile=tuple(
                (flat_name("profile", n), n, PROFILE_DEFAULTS.get(n)) for n in sorted(needs.profile)
            ),
            scores=tuple(
                (flat_name("scores", n), n, {} if n == "offer" else 0.0) for n in sorted(needs.scores)
            ),
        )

    def values(
        self,
        event: Mapping[str, Any],
        state: Mapping[str, Any],
        profile: Mapping[str, Any],
        scores: Mapping[str, Any],
        now: float,
        channel: str,
    ) -> dict[str, Any]:
        out: dict[str, Any] = {"now": now, "channel": channel}
        for key, name in self.event:
            out[key] = _cel_value(event.get(name))
        if "event__amount" in out:
            out["event__amount"] = float(event.get("amount") or 0.0)
        attrs = event.get("attributes") or {}
        for key, name in self.attributes:
            out[key] = _cel_value(attrs.get(name))
        for key, name in self.state:
            v = state.get(name)
            out[key] = list(v) if type(v) is tuple else v
        for key, name, default in self.profile:
            out[key] = _cel_value(profile.get(name, default))
        for key, name, default in self.scores:
            out[key] = scores.get(name, default)
        return out


class Evaluator:
    """One reusable CEL context per rule set: per event only the variables change.

    Not thread-safe, like the decision loop that uses it (one per process, asyncio)."""

    def __init__(self, needs: Needs, lists: Mapping[str, frozenset[str]]) -> None:
        self.needs = needs
        self._layout = _Layout.of(needs)
        self._now = [0.0]
        self.context = cel.Context({"now": 0.0, "channel": ""}, helper_functions(self._now, lists))

    def bind(
        self,
        event: Mapping[str, Any],
        state: Mapping[str, Any],
        profile: Mapping[str, Any],
        scores: Mapping[str, Any],
        now: float,
        channel: str,
    ) -> cel.Context:
        self._now[0] = now
        self.context.update(self._layout.values(event, state, profile, scores, now, channel))
        return self.context


def helper_functions(now: list[float], lists: Mapping[str, frozenset[str]]) -> dict[str, Any]:
    def age_s(ts: Any) -> float:
        """Seconds from a timestamp to now (-1.0 when there is no timestamp)."""
        return -1.0 if ts is None else now[0] - float(ts)

    def in_list(name: str, value: Any) -> bool:
        """Whether a value is in one of the packs' named lists."""
        return value is not None and str(value) in lists.get(name, frozenset())

    return {
        "geo_km": geo_km,
        "local_hour": local_hour,
        "local_weekday": local_weekday,
        "age_s": age_s,
        "in_list": in_list,
    }


def geo_km(a: Any, b: Any) -> float:
    """Great-circle distance in km between two {lat, lon} maps; -1.0 if either is missing.

    >>> round(geo_km({"lat": 51.5074, "lon": -0.1278}, {"lat": 48.8566, "lon": 2.3522}))
    344
    >>> geo_km(None, {"lat": 1.0, "lon": 1.0})
    -1.0
    """
    if not isinstance(a, Mapping) or not isinstance(b, Mapping):
        return -1.0
    try:
        lat1, lon1, lat2, lon2 = (float(a["lat"]), float(a["lon"]), float(b["lat"]), float(b["lon"]))
    except (KeyError, TypeError, ValueError):
        return -1.0
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * _EARTH_KM * math.asin(math.sqrt(h))


def local_hour(ts: float, tz: str) -> int:
    """Hour of the day (0-23) of a timestamp in a time zone (UTC if the zone is unknown).

    >>> local_hour(1795428000.0, "UTC"), local_hour(1795428000.0, "Asia/Tokyo")
    (10, 19)
    """
    return datetime.fromtimestamp(float(ts), _zone(str(tz))).hour


def local_weekday(ts: float, tz: str) -> int:
    """Day of the week of a timestamp in a time zone: 0 is Monday, 6 is Sunday."""
    return datetime.fromtimestamp(float(ts), _zone(str(tz))).weekday()


@lru_cache(maxsize=256)
def _zone(name: str) -> Any:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def _cel_value(value: Any) -> Any:
    # Inputs are finite (the event parser refuses NaN and infinities); only tuples
    # (products, from features) need turning into lists.
    return list(value) if type(value) is tuple else value


def lookup(path: str, sources: Mapping[str, Mapping[str, Any]]) -> Any:
    """The value behind ``root.field[.sub]`` for explanations (None when absent).

    >>> lookup("state.n_10m", {"state": {"n_10m": 3}}), lookup("event.attributes.x", {"event": {}})
    (3, None)
    """
    root, _, rest = path.partition(".")
    value: Any = sources.get(root)
    for part in rest.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part, PROFILE_DEFAULTS.get(part) if root == "profile" else None)
    return value
