"""Hostile input: whatever bytes arrive, parsing returns an Event or raises EventError
with a stable code, never anything else; and whatever it accepts can be encoded again
(the audit record and the DLQ copy are written after state changed)."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.domain.events import Event, parse_event
from engine.errors import EventError
from engine.settings import Settings

NOW = 1_795_428_000.0
S = Settings()
CODES = {
    "too_large", "invalid_json", "invalid_utf8", "not_an_object", "missing_field", "wrong_type",
    "invalid_value", "unknown_channel", "unknown_type", "ts_in_future", "ts_too_old", "duplicate_key",
}  # fmt: skip

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
fields = st.fixed_dictionaries(
    {},
    optional={
        "event_id": json_values | st.text(min_size=1, max_size=10),
        "customer_id": json_values | st.text(min_size=1, max_size=10),
        "channel": json_values | st.sampled_from(["atm", "internet", "mobile", "fax"]),
        "type": json_values | st.sampled_from(["withdrawal", "login", "teleport"]),
        "ts": json_values | st.floats(NOW - 40 * 86400, NOW + 3600),
        "amount": json_values | st.floats(-10, 1e12),
        "geo": json_values,
        "attributes": json_values,
        "currency": json_values,
    },
)


def _check(raw: bytes) -> None:
    try:
        event = parse_event(raw, S, NOW)
    except EventError as err:
        assert err.code in CODES
        return
    assert isinstance(event, Event) and event.channel in S.channels
    assert orjson.loads(orjson.dumps(event.to_dict()))["event_id"] == event.event_id


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_bytes(raw: bytes) -> None:
    _check(raw)


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(fields)
def test_arbitrary_event_shaped_objects(event: dict[str, object]) -> None:
    _check(orjson.dumps(event))


@settings(max_examples=80)
@given(st.integers(1, 1100), st.sampled_from(["attributes", "geo", "unknown"]), st.booleans())
def test_deep_nesting_is_refused_not_recursed(depth: int, name: str, lists: bool) -> None:
    # orjson decodes 1,024 levels, beyond Python's recursion limit (~1,000) and beyond
    # the 254 levels orjson encodes again: every depth must end in a code.
    opener, closer = (b"[", b"]") if lists else (b'{"a": ', b"}")
    nested = opener * depth + b"1" + closer * depth
    raw = VALID[:-1] + b', "' + name.encode() + b'": ' + nested + b"}"
    _check(raw)
    if depth > 4:
        with pytest.raises(EventError) as info:
            parse_event(raw, S, NOW)
        assert info.value.code in {"invalid_value", "invalid_json", "wrong_type"}


VALID = orjson.dumps(
    {"event_id": "e1", "customer_id": "C1", "channel": "atm", "type": "withdrawal", "ts": NOW, "amount": 5}
)
keys = st.sampled_from(["amount", "customer_id", "a", "a:b", "ts", "x"]) | st.text(max_size=6)
members = st.lists(st.tuples(keys, json_values | st.sampled_from(["10:00", ":", "a\\u003a"])), max_size=8)


def _encode_member(key: str, value: object, escape: bool) -> bytes:
    encoded = orjson.dumps(key)
    if escape:  # the same key, its colons written as JSON escapes
        encoded = encoded.replace(b":", b"\\u003a")
    return encoded + b":" + orjson.dumps(value)


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(members, st.booleans(), st.data())
def test_a_repeated_key_is_refused_and_no_other_object_is(
    pairs: list[tuple[str, object]], escape: bool, data: st.DataObject
) -> None:
    if pairs and data.draw(st.booleans()):  # repeat one key, maybe spelled with escapes
        key = data.draw(st.sampled_from([k for k, _ in pairs]))
        pairs = [*pairs, (key, data.draw(json_values))]
    written = [_encode_member(k, v, escape and data.draw(st.booleans())) for k, v in pairs]
    raw = VALID[:-1] + b"".join(b"," + m for m in written) + b"}"
    top = ["event_id", "customer_id", "channel", "type", "ts", "amount", *(k for k, _ in pairs)]
    repeated = len(set(top)) < len(top)
    try:
        parse_event(raw, S, NOW)
        code = None
    except EventError as err:
        code = err.code
    if repeated:
        assert code in {"duplicate_key", "too_large", "invalid_value"}, code
    else:
        assert code != "duplicate_key"


def test_a_repeated_key_inside_attributes_is_refused() -> None:
    raw = VALID[:-1] + b', "attributes": {"new_payee": false, "new_payee": true}}'
    with pytest.raises(EventError) as info:
        parse_event(raw, S, NOW)
    assert info.value.code == "duplicate_key"


@pytest.mark.parametrize("name", ["event_id", "customer_id", "terminal_id", "currency"])
def test_a_trailing_newline_does_not_pass_as_an_identifier(name: str) -> None:
    event = {**orjson.loads(VALID), name: "GBP\n" if name == "currency" else "C1\n"}
    with pytest.raises(EventError) as info:
        parse_event(orjson.dumps(event), S, NOW)
    assert (info.value.code, info.value.field) == ("invalid_value", name)


def test_numbers_json_cannot_hold_in_64_bits_are_errors() -> None:
    base = b'{"event_id":"e","customer_id":"c","channel":"atm","type":"withdrawal","ts":1795428000,'
    for amount in (b"99999999999999999999999", b"1e400", b"-1e400"):
        _check(base + b'"amount":' + amount + b"}")
