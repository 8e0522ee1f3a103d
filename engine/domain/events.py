"""The interaction event: parsed with orjson into a typed, validated record.

Unknown fields are kept (in ``extra``); wrong types are errors with a stable code and
the offending field, so a channel engineer can fix the sender without reading logs.

>>> from engine.settings import Settings
>>> raw = b'{"event_id":"e1","customer_id":"c1","channel":"atm","type":"withdrawal",'
>>> raw += b'"ts":"2026-11-23T10:00:00Z","amount":60,"terminal_id":"T9","x":1}'
>>> ev = parse_event(raw, Settings(), now=1795428000.0)
>>> ev.channel, ev.amount, ev.extra
('atm', 60.0, {'x': 1})
>>> parse_event(b'{"event_id":"e1"}', Settings(), now=0.0)
Traceback (most recent call last):
...
engine.errors.EventError: missing required field
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from engine.errors import EventError
from engine.settings import Settings

# Used with fullmatch: "$" would also match before a trailing newline ("C1\n").
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,127}")
_CURRENCY = re.compile(r"[A-Z]{3}")
_MAX_ATTR_DEPTH = 4
_MAX_ATTRS = 64
_OPTIONAL_STR = ("device_id", "terminal_id", "session_id")
_KNOWN = frozenset(
    {"event_id", "customer_id", "channel", "type", "ts", "amount", "currency", "geo", "attributes"}
    | set(_OPTIONAL_STR)
)


@dataclass(frozen=True, slots=True)
class Geo:
    lat: float
    lon: float


@dataclass(frozen=True, slots=True)
class Event:
    event_id: str
    customer_id: str
    channel: str
    type: str
    ts: float  # epoch seconds, UTC
    amount: float | None = None
    currency: str | None = None
    device_id: str | None = None
    terminal_id: str | None = None
    session_id: str | None = None
    geo: Geo | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "event_id": self.event_id,
            "customer_id": self.customer_id,
            "channel": self.channel,
            "type": self.type,
            "ts": self.ts,
        }
        for name in ("amount", "currency", *_OPTIONAL_STR):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.geo is not None:
            out["geo"] = {"lat": self.geo.lat, "lon": self.geo.lon}
        if self.attributes:
            out["attributes"] = self.attributes
        out.update(self.extra)
        return out


# Attributes a label event carries (engine.domain.labels): always kept in the audit record.
LABEL_ATTRIBUTES = frozenset(
    {"ref_event_id", "ref_channel", "legitimate", "response", "decision_id", "action_id"}
)
# A conversion (a product opened, a loan drawn, a deposit placed: the bank's core systems
# report it) names its product; offer reports match it to the offers shown (issue 18).
CONVERSION = "conversion"
PRODUCT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")  # also the packs' offer `products`


def audited(event: Event, attributes: frozenset[str]) -> dict[str, Any]:
    """What ``decisions.audit`` keeps of an event (issue 17, finding 10): the contract's
    own fields, and of its attributes only those the rules or models read (``attributes``)
    or a label needs; unknown top-level fields (``extra``) and other attributes are not
    copied into a record kept for weeks.

    >>> ev = Event("e1", "C1", "atm", "withdrawal", 1.0, attributes={"mcc": "6011", "note": "x"},
    ...            extra={"national_id": "AB123"})
    >>> kept = audited(ev, frozenset({"mcc"}))
    >>> kept["attributes"], "national_id" in kept, kept["event_id"]
    ({'mcc': '6011'}, False, 'e1')
    """
    out = event.to_dict()
    for name in event.extra:
        out.pop(name, None)
    product = event.type == CONVERSION  # a conversion's product: what offer reports match on
    kept = {
        k: v
        for k, v in event.attributes.items()
        if k in attributes or k in LABEL_ATTRIBUTES or (product and k == "product")
    }
    if kept:
        out["attributes"] = kept
    else:
        out.pop("attributes", None)
    return out


def payload_digest(event: Event) -> str:
    """What makes two deliveries of an event id one event: a digest (blake2b, 8 bytes, in
    hex) of its content as parsed (:meth:`Event.to_dict`, keys sorted), so key order, a
    ``ts`` in ISO 8601 or epoch seconds and ``40`` for ``40.0`` do not matter, and every
    field the channel sent does, unknown ones included. The ingest script binds it to the
    event's dedupe key: a repeat carrying another payload is a ``conflicting_replay``.

    >>> a = Event("e1", "C1", "atm", "withdrawal", 1795428000.0, amount=40.0)
    >>> payload_digest(a) == payload_digest(Event("e1", "C1", "atm", "withdrawal", 1795428000, amount=40))
    True
    >>> payload_digest(a) == payload_digest(Event("e1", "C1", "atm", "withdrawal", 1795428000.0, amount=41.0))
    False
    """
    content = event.to_dict()
    content["ts"] = float(event.ts)  # as the parser makes them (an Event built in code may hold ints)
    if event.amount is not None:
        content["amount"] = float(event.amount)
    return hashlib.blake2b(orjson.dumps(content, option=orjson.OPT_SORT_KEYS), digest_size=8).hexdigest()


def parse_event(raw: bytes, settings: Settings, now: float, oldest: float | None = None) -> Event:
    """Parse and validate one event; raise :class:`EventError` on any problem.

    ``now`` is the server clock (no ``ts`` may be later, less the allowed skew); ``oldest``
    the earliest ``ts`` accepted, by default ``now`` less ``max_event_age_s`` (a worker
    replaying history passes its own: engine/service/eventclock.py)."""
    if len(raw) > settings.max_event_bytes:
        raise EventError("too_large", f"event is {len(raw)} bytes; the limit is {settings.max_event_bytes}")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        code = "invalid_utf8" if "UTF-8" in str(exc) else "invalid_json"
        raise EventError(code, f"not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise EventError("not_an_object", "an event must be a JSON object")
    _refuse_duplicate_keys(raw, *_shape(data))
    return event_from_dict(data, settings, now, oldest)


def _shape(data: dict[str, Any]) -> tuple[int, int]:
    """Members of every object and colons inside every string of a decoded event.

    Any field nested deeper than attributes may be is refused here: orjson decodes up
    to 1,024 levels, deeper than Python's recursion limit and than orjson will encode
    again for the audit record, so a deep unknown field would fail after state changed.
    """
    members, colons = len(data), 0
    for name, value in data.items():
        colons += name.count(":")
        if type(value) is str:
            colons += value.count(":")
        elif type(value) is dict or type(value) is list:
            sub_members, sub_colons = _walk(value, name)
            members += sub_members
            colons += sub_colons
    return members, colons


def _walk(value: dict[str, Any] | list[Any], name: str) -> tuple[int, int]:
    # A loop with its own stack, not recursion: the depth is what is being checked.
    members = colons = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > _MAX_ATTR_DEPTH:
            raise EventError("invalid_value", f"{name} nests deeper than {_MAX_ATTR_DEPTH} levels", name)
        if type(node) is dict:
            members += len(node)
            colons += sum(key.count(":") for key in node)
            node = node.values()
        for child in node:
            if type(child) is str:
                colons += child.count(":")
            elif type(child) is dict or type(child) is list:
                stack.append((child, depth + 1))
    return members, colons


def _refuse_duplicate_keys(raw: bytes, members: int, colons: int) -> None:
    """Refuse an object with a repeated key: parsers disagree on which value wins, so
    the channel, its logs and Beacon could each read a different amount or customer.

    The cheap proof first. Each member puts one colon outside strings, so the raw bytes
    hold as many colons as members written plus colons inside strings. A repeated key
    leaves the decoded document a member short, which only a colon that is in a decoded
    string but not in the raw bytes (an escaped one, \\u003a) could make up for. When the
    proof fails (an escaped colon, or a real duplicate), the slower exact check decides.
    """
    if raw.count(b":") == members + colons and b"\\u003" not in raw:
        return
    try:
        json.loads(raw, object_pairs_hook=_unique)
    except ValueError as exc:  # orjson accepted it; the standard library should too
        raise EventError("invalid_json", f"not valid JSON: {exc}") from exc


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            field_name = key if key in _KNOWN else None  # an unknown key could be any length
            raise EventError("duplicate_key", f"key {key[:64]!r} appears twice in one object", field_name)
        out[key] = value
    return out


def event_from_dict(
    data: dict[str, Any], settings: Settings, now: float, oldest: float | None = None
) -> Event:
    """Validate an already-decoded event (CSV rows and tests use this directly)."""
    channel = _required_str(data, "channel")
    if channel not in settings.channels:
        raise EventError("unknown_channel", f"channel {channel!r} is not configured", "channel")
    etype = _required_str(data, "type")
    if etype not in settings.event_types:
        raise EventError("unknown_type", f"event type {etype!r} is not configured", "type")
    ts = _timestamp(data.get("ts"), now, settings, oldest)
    event = Event(
        event_id=_identifier(data, "event_id"),
        customer_id=_identifier(data, "customer_id"),
        channel=channel,
        type=etype,
        ts=ts,
        amount=_amount(data.get("amount")),
        currency=_currency(data.get("currency")),
        device_id=_optional_id(data, "device_id"),
        terminal_id=_optional_id(data, "terminal_id"),
        session_id=_optional_id(data, "session_id"),
        geo=_geo(data.get("geo")),
        attributes=_attributes(data.get("attributes")),
        extra={k: v for k, v in data.items() if k not in _KNOWN},
    )
    if etype == CONVERSION:
        _product(event.attributes)
    return event


def _required_str(data: dict[str, Any], name: str) -> str:
    if name not in data or data[name] is None:
        raise EventError("missing_field", "missing required field", name)
    value = data[name]
    if not isinstance(value, str):
        raise EventError("wrong_type", f"{name} must be a string", name)
    return value


def _identifier(data: dict[str, Any], name: str) -> str:
    value = _required_str(data, name)
    if not _ID.fullmatch(value):
        raise EventError("invalid_value", f"{name} must be 1-128 characters of [A-Za-z0-9_.:@/-]", name)
    return value


def _optional_id(data: dict[str, Any], name: str) -> str | None:
    if data.get(name) is None:
        return None
    return _identifier(data, name)


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EventError("wrong_type", f"{name} must be a number", name)
    number = float(value)
    if not math.isfinite(number):
        raise EventError("invalid_value", f"{name} must be finite", name)
    return number


def _timestamp(value: Any, now: float, settings: Settings, oldest: float | None) -> float:
    if value is None:
        raise EventError("missing_field", "missing required field", "ts")
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise EventError("invalid_value", "ts must be ISO 8601 or epoch seconds", "ts") from exc
        if parsed.tzinfo is None:
            raise EventError("invalid_value", "ts must carry a time zone (e.g. Z)", "ts")
        ts = parsed.timestamp()
    else:
        ts = _number(value, "ts")
    if ts > now + settings.max_clock_skew_s:
        raise EventError("ts_in_future", "ts is later than the server clock allows", "ts")
    if ts < (now - settings.max_event_age_s if oldest is None else oldest):
        raise EventError("ts_too_old", "ts is older than the oldest window kept", "ts")
    return ts


def _amount(value: Any) -> float | None:
    if value is None:
        return None
    amount = _number(value, "amount")
    if amount < 0:
        raise EventError("invalid_value", "amount must not be negative", "amount")
    if amount > 1e10:
        raise EventError("invalid_value", "amount is implausibly large", "amount")
    return amount


def _currency(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _CURRENCY.fullmatch(value):
        raise EventError("invalid_value", "currency must be an ISO 4217 code", "currency")
    return value


def _geo(value: Any) -> Geo | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise EventError("wrong_type", "geo must be an object with lat and lon", "geo")
    lat = _number(value.get("lat"), "geo.lat")
    lon = _number(value.get("lon"), "geo.lon")
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise EventError("invalid_value", "geo is outside valid latitude/longitude", "geo")
    return Geo(lat, lon)


def _attributes(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise EventError("wrong_type", "attributes must be an object", "attributes")
    if len(value) > _MAX_ATTRS:
        raise EventError("invalid_value", f"at most {_MAX_ATTRS} attributes", "attributes")
    _walk(value, "attributes")  # decoded events were walked already; CSV rows and tests not
    return value


def _product(attributes: dict[str, Any]) -> None:
    """A conversion names its product (``attributes.product``): an offer id or the bank's
    product code, 1-64 characters of [A-Za-z0-9_.:-].

    >>> _product({"product": "credit_card_gold"})
    >>> _product({})
    Traceback (most recent call last):
    ...
    engine.errors.EventError: a conversion names its product
    """
    value = attributes.get("product")
    if value is None:
        raise EventError("missing_field", "a conversion names its product", "attributes.product")
    if not isinstance(value, str):
        raise EventError("wrong_type", "attributes.product must be a string", "attributes.product")
    if not PRODUCT.fullmatch(value):
        raise EventError(
            "invalid_value",
            "attributes.product must be 1-64 characters of [A-Za-z0-9_.:-]",
            "attributes.product",
        )
