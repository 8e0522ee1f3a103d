"""Signed records (issue 17, finding 1): the pure signer and verifier."""

from __future__ import annotations

import pytest

from engine.domain.recordsig import HEADER, RecordSigner, parse_keys, sign, verify
from engine.errors import ConfigError
from engine.settings import Settings

KEYS = {"k1": b"one", "k2": b"two"}


def test_a_signed_record_verifies_and_any_change_is_forged() -> None:
    h = sign("risk.alerts", b"c1", b'{"a":1}', "k1", b"one")
    assert verify("risk.alerts", b"c1", b'{"a":1}', [h], KEYS) is None
    assert verify("risk.alerts", b"c1", b'{"a":2}', [h], KEYS) == "record_forged"
    assert verify("risk.alerts", b"c2", b'{"a":1}', [h], KEYS) == "record_forged"
    assert verify("feedback", b"c1", b'{"a":1}', [h], KEYS) == "record_forged"  # replayed on another topic
    # key and value boundaries cannot be shifted: b"c" + b"1{" is not b"c1" + b"{"
    assert verify("risk.alerts", b"c", b'1{"a":1}', [h], KEYS) == "record_forged"


def test_unsigned_unknown_key_and_garbage_headers_are_refused() -> None:
    assert verify("feedback", None, b"{}", None, KEYS) == "record_unsigned"
    assert verify("feedback", None, b"{}", [("other", b"x")], KEYS) == "record_unsigned"
    h = sign("feedback", None, b"{}", "k9", b"nine")
    assert verify("feedback", None, b"{}", [h], KEYS) == "record_unknown_key"
    assert verify("feedback", None, b"{}", [(HEADER, b"\xff\xfe")], KEYS) == "record_unknown_key"
    assert verify("feedback", None, b"{}", [(HEADER, b"k1:zz")], KEYS) == "record_forged"


def test_keys_rotate_old_signatures_verify_while_listed() -> None:
    old = sign("feedback", b"c", b"{}", "k1", b"one")
    new = sign("feedback", b"c", b"{}", "k2", b"two")
    assert verify("feedback", b"c", b"{}", [old], KEYS) is None
    assert verify("feedback", b"c", b"{}", [new], KEYS) is None
    assert verify("feedback", b"c", b"{}", [old], {"k2": b"two"}) == "record_unknown_key"


def test_parse_keys_refuses_malformed_entries() -> None:
    assert parse_keys(" k1=a=b , ,k2=c") == {"k1": b"a=b", "k2": b"c"}
    for bad in ("k1", "=x", "k1=", "a:b=c"):
        with pytest.raises(ConfigError):
            parse_keys(bad)


def test_signer_signs_only_the_signed_topics_and_enforces_once_a_key_is_set() -> None:
    off = RecordSigner("", "k1", "", ["p.risk.alerts"])
    assert not off.enforced and off.headers("p.risk.alerts", b"k", b"v", None) is None
    assert off.refusal("p.risk.alerts", b"k", b"v", None) is None
    on = RecordSigner("one", "k1", "k2=two", ["p.risk.alerts"])
    assert on.headers("p.interactions", b"k", b"v", [("x", b"1")]) == [("x", b"1")]
    headers = on.headers("p.risk.alerts", b"k", b"v", [("x", b"1")])
    assert headers is not None and headers[0] == ("x", b"1")
    assert on.refusal("p.risk.alerts", b"k", b"v", headers) is None
    assert on.refusal("p.risk.alerts", b"k", b"v", None) == "record_unsigned"


def test_signing_keys_are_secrets() -> None:
    s = Settings.build(env={}, record_signing_key="topsecret", record_verify_keys="k0=older")
    assert "topsecret" not in repr(s) and "older" not in repr(s)
    assert s.redacted()["record_signing_key"] == "***" and s.redacted()["record_verify_keys"] == "***"
