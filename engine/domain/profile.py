"""A customer's profile as the CRM writes it: the schema of the known fields, limits on
the rest, JSON Merge Patch (RFC 7396), and what a change changed (issue 17, finding 2).

Known fields are checked against :data:`SCHEMA` (a JSON Schema, checked with
``jsonschema``) and ``timezone`` against the IANA database, so a ``local_hour`` rule
cannot be switched off by ``"Europe"``. Other attributes (a bank's own) are kept, within
:data:`MAX_DEPTH` levels and :data:`MAX_BYTES` bytes.

>>> merge_patch({"segment": "mass", "products": ["current"]}, {"segment": "affluent", "products": None})
{'segment': 'affluent'}
>>> validated({"timezone": "Europe"})
Traceback (most recent call last):
...
engine.errors.EventError: timezone: 'Europe' is not an IANA time zone (e.g. Europe/London)
>>> changes({"segment": "mass", "name": "A"}, {"segment": "affluent", "name": "A"})
{'segment': ['mass', 'affluent']}
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Mapping
from typing import Any

import jsonschema
import orjson

from engine.errors import EventError

MAX_DEPTH = 4  # {"a": {"b": {"c": [1]}}} is 4 deep: enough for an address or a geo point
MAX_BYTES = 8 * 1024
MAX_FIELDS = 100
_BAND = {"type": ["string", "null"], "maxLength": 40}
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "maxProperties": MAX_FIELDS,
    "properties": {
        "segment": _BAND,
        "age_band": _BAND,
        "income_band": _BAND,
        "kyc_risk": {"enum": ["low", "medium", "high", None]},
        "timezone": {"type": ["string", "null"], "maxLength": 64},
        "products": {"type": ["array", "null"], "items": {"type": "string", "maxLength": 40}, "maxItems": 50},
        "home_geo": {
            "type": ["object", "null"],
            "properties": {
                "lat": {"type": "number", "minimum": -90, "maximum": 90},
                "lon": {"type": "number", "minimum": -180, "maximum": 180},
            },
            "required": ["lat", "lon"],
            "additionalProperties": False,
        },
        "tenure_months": {"type": ["integer", "null"], "minimum": 0, "maximum": 1500},
        "name": {"type": ["string", "null"], "maxLength": 200},
    },
}
_VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
CUT = "(cut: nested too deep)"


def depth(value: Any) -> int:
    """Nesting depth of a JSON value: a scalar is 0, ``{"a": 1}`` is 1."""
    stack, deepest = [(value, 0)], 0
    while stack:  # iterative: a 250-deep stored value must not hit Python's recursion limit
        node, level = stack.pop()
        if isinstance(node, dict):
            stack.extend((v, level + 1) for v in node.values())
            deepest = max(deepest, level + 1)
        elif isinstance(node, list):
            stack.extend((v, level + 1) for v in node)
            deepest = max(deepest, level + 1)
    return deepest


def validated(profile: Any) -> dict[str, Any]:
    """The profile, if it is one a CRM may store; else EventError with a code and field."""
    if not isinstance(profile, dict):
        raise EventError("not_an_object", "a profile must be a JSON object")
    if depth(profile) > MAX_DEPTH:
        raise EventError("too_deep", f"a profile nests at most {MAX_DEPTH} levels")
    if len(orjson.dumps(profile)) > MAX_BYTES:
        raise EventError("too_large", f"a profile is at most {MAX_BYTES} bytes as JSON")
    error = next(iter(sorted(_VALIDATOR.iter_errors(profile), key=lambda e: list(e.path))), None)
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path) or None
        raise EventError("invalid_value", f"{where or 'profile'}: {error.message}", where)
    tz = profile.get("timezone")
    if tz is not None and not _known_zone(tz):
        raise EventError(
            "invalid_value", f"timezone: {tz!r} is not an IANA time zone (e.g. Europe/London)", "timezone"
        )
    return profile


def _known_zone(name: str) -> bool:
    if "/" not in name and name != "UTC":
        return False  # "Europe", "CET"-style abbreviations: not a place a rule can use
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396: objects merge key by key, ``null`` removes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def changes(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> dict[str, list[Any]]:
    """Top-level fields that changed: ``{field: [before, after]}`` (None: absent)."""
    before = before or {}
    names = sorted(set(before) | set(after))
    return {n: [before.get(n), after.get(n)] for n in names if before.get(n) != after.get(n)}


def shown(value: Any, limit: int = MAX_DEPTH) -> Any:
    """A stored value cut to ``limit`` levels for display: profiles stored before the
    limit (one 252 deep made the customer's page fail) still show, the excess as ``CUT``."""
    if limit <= 0 and isinstance(value, dict | list):
        return CUT
    if isinstance(value, dict):
        return {k: shown(v, limit - 1) for k, v in value.items()}
    if isinstance(value, list):
        return [shown(v, limit - 1) for v in value]
    return value
