"""Event validation: every kind of bad input gets a stable code and the field."""

from __future__ import annotations

import math

import orjson
import pytest

from engine.domain.events import parse_event
from engine.errors import EventError
from engine.settings import Settings

NOW = 1_795_428_000.0
S = Settings()


def good(**changes: object) -> dict[str, object]:
    event: dict[str, object] = {
        "event_id": "e-1",
        "customer_id": "C000001",
        "channel": "atm",
        "type": "withdrawal",
        "ts": NOW - 10,
        "amount": 40.0,
    }
    event.update(changes)
    return {k: v for k, v in event.items() if v is not ...}


def code_of(raw: bytes) -> tuple[str, str | None]:
    with pytest.raises(EventError) as info:
        parse_event(raw, S, NOW)
    return info.value.code, info.value.field


def test_valid_event_keeps_unknown_fields() -> None:
    ev = parse_event(orjson.dumps(good(loyalty_tier="gold")), S, NOW)
    assert ev.extra == {"loyalty_tier": "gold"}
    assert ev.to_dict()["loyalty_tier"] == "gold"


def test_iso_timestamp_with_zone() -> None:
    ev = parse_event(orjson.dumps(good(ts="2026-11-23T10:00:00Z")), S, NOW + 10)
    assert ev.ts == NOW


@pytest.mark.parametrize(
    ("changes", "code", "field"),
    [
        ({"customer_id": ...}, "missing_field", "customer_id"),
        ({"event_id": 12}, "wrong_type", "event_id"),
        ({"channel": "fax"}, "unknown_channel", "channel"),
        ({"type": "teleport"}, "unknown_type", "type"),
        ({"amount": "12"}, "wrong_type", "amount"),
        ({"amount": True}, "wrong_type", "amount"),
        ({"amount": -1}, "invalid_value", "amount"),
        ({"ts": NOW + 3600}, "ts_in_future", "ts"),
        ({"ts": NOW - 86400 * 40}, "ts_too_old", "ts"),
        ({"ts": "yesterday"}, "invalid_value", "ts"),
        ({"ts": "2026-11-23T10:00:00"}, "invalid_value", "ts"),
        ({"geo": {"lat": 91, "lon": 0}}, "invalid_value", "geo"),
        ({"geo": [1, 2]}, "wrong_type", "geo"),
        ({"currency": "pounds"}, "invalid_value", "currency"),
        ({"customer_id": "has space"}, "invalid_value", "customer_id"),
        ({"attributes": {"a": {"b": {"c": {"d": {"e": 1}}}}}}, "invalid_value", "attributes"),
    ],
)
def test_bad_fields_have_codes(changes: dict[str, object], code: str, field: str) -> None:
    assert code_of(orjson.dumps(good(**changes))) == (code, field)


def test_not_json_not_object_too_large_invalid_utf8() -> None:
    assert code_of(b'{"event_id": ')[0] == "invalid_json"
    assert code_of(b"[1, 2]")[0] == "not_an_object"
    assert code_of(b'{"pad": "' + b"x" * 17000 + b'"}')[0] == "too_large"
    assert code_of(b'{"event_id": "\xff\xfe"}')[0] == "invalid_utf8"


def test_nan_and_infinity_are_rejected() -> None:
    # NaN is not JSON; orjson refuses it, and a float overflow becomes inf.
    assert code_of(b'{"amount": NaN}')[0] == "invalid_json"
    raw = orjson.dumps(good()).replace(b"40.0", b"1e999")
    assert code_of(raw)[0] in {"invalid_json", "invalid_value"}
    assert not math.isnan(parse_event(orjson.dumps(good()), S, NOW).amount or 0)


def test_the_payload_digest_is_the_events_content_not_its_spelling() -> None:
    """Issue 14, finding 7: a replayed event id must carry the payload it was first decided on."""
    from datetime import UTC, datetime

    from engine.decide.degraded import answered
    from engine.domain.events import payload_digest

    base = parse_event(orjson.dumps(good(ts=NOW - 10, geo={"lat": 1.5, "lon": 2.0})), S, NOW)
    digest = payload_digest(base)
    assert len(digest) == 16 and int(digest, 16) >= 0  # 8 bytes of blake2b, in hex
    # Keys in another order, ts as ISO 8601, 40 for 40.0: the same event.
    iso = datetime.fromtimestamp(NOW - 10, UTC).isoformat().replace("+00:00", "Z")
    assert parse_event(orjson.dumps(good(ts=iso)), S, NOW).ts == NOW - 10
    again = {"geo": {"lon": 2, "lat": 1.5}, **dict(reversed(good(ts=iso, amount=40).items()))}
    assert payload_digest(parse_event(orjson.dumps(again), S, NOW)) == digest
    # Republished after a degraded answer (engine/decide/degraded.py): still the same event.
    assert payload_digest(answered(base, "d-1")) == digest
    # Anything the channel sent that differs is another payload.
    for changes in ({"amount": 40.01}, {"type": "transfer"}, {"ts": NOW - 11}, {"device_id": "d2"},
                    {"x_unknown": 1}, {"attributes": {"k": "v"}}, {"customer_id": "C000002"}):  # fmt: skip
        other = parse_event(orjson.dumps({**good(geo={"lat": 1.5, "lon": 2.0}), **changes}), S, NOW)
        assert payload_digest(other) != digest, changes
