"""Hostile input: whatever bytes arrive, parsing returns an Event or raises EventError
with a stable code, never anything else."""

from __future__ import annotations

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import EventError
from engine.events import Event, parse_event
from engine.settings import Settings

NOW = 1_795_428_000.0
S = Settings()
CODES = {
    "too_large", "invalid_json", "invalid_utf8", "not_an_object", "missing_field", "wrong_type",
    "invalid_value", "unknown_channel", "unknown_type", "ts_in_future", "ts_too_old",
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


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_bytes(raw: bytes) -> None:
    _check(raw)


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(fields)
def test_arbitrary_event_shaped_objects(event: dict[str, object]) -> None:
    _check(orjson.dumps(event))


@settings(max_examples=50)
@given(st.integers(1, 200))
def test_deep_nesting_is_refused_not_recursed(depth: int) -> None:
    raw = b'{"attributes": ' + b'{"a": ' * depth + b"1" + b"}" * depth + b"}"
    _check(raw)


def test_numbers_json_cannot_hold_in_64_bits_are_errors() -> None:
    base = b'{"event_id":"e","customer_id":"c","channel":"atm","type":"withdrawal","ts":1795428000,'
    for amount in (b"99999999999999999999999", b"1e400", b"-1e400"):
        _check(base + b'"amount":' + amount + b"}")
