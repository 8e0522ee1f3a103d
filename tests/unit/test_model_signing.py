"""Signing and verifying model snapshots, without Redis: versions, keys, tampering, and
that an unverified payload is never unpickled."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
from river import linear_model

from models.ed25519 import generate_keypair, key_id, load_private_key, load_public_keys
from models.errors import SigningKeyError, SnapshotRefused, UnknownSnapshot
from models.signing import (
    SnapshotVersion,
    check_name,
    pickle_model,
    seal,
    unseal,
    verify,
)

_PAIR, _OTHER_PAIR = generate_keypair(), generate_keypair()
KEY, OTHER = load_private_key(_PAIR[0]), load_private_key(_OTHER_PAIR[0])
PUB, OTHER_PUB = load_public_keys([_PAIR[1]]), load_public_keys([_OTHER_PAIR[1]])


def trained() -> linear_model.LogisticRegression:
    m = linear_model.LogisticRegression()
    for i in range(20):
        m.learn_one({"a": float(i % 3), "b": 1.0}, i % 2 == 0)
    return m


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("risk-v1-0123456789ab", ("risk", 1, "0123456789ab")),
        ("offer_propensity-v12-abcdefabcdef", ("offer_propensity", 12, "abcdefabcdef")),
        ("churn2-v999999-000000000000", ("churn2", 999999, "000000000000")),
    ],
)
def test_versions_parse_and_print_back(text: str, parsed: tuple[str, int, str]) -> None:
    v = SnapshotVersion.parse(text)
    assert (v.name, v.number, v.digest) == parsed and str(v) == text


@pytest.mark.parametrize(
    "text",
    ["risk", "risk-v0-0123456789ab", "risk-v1-0123456789a", "risk-v1-0123456789AB", "Risk-v1-0123456789ab",
     "risk-v01-0123456789ab", "risk-1-0123456789ab", "ri:sk-v1-0123456789ab", "risk-v1-0123456789ab\n", ""],
)  # fmt: skip
def test_malformed_versions_are_refused(text: str) -> None:
    with pytest.raises(UnknownSnapshot, match="not a model snapshot version"):
        SnapshotVersion.parse(text)


@pytest.mark.parametrize(
    "name", ["", "Risk", "1risk", "risk-1", "risk:x", "ri{sk}", "r" * 49, "risk|x", "risk\n"]
)
def test_model_names_that_would_break_keys_or_versions_are_refused(name: str) -> None:
    with pytest.raises(UnknownSnapshot, match="not a model name"):
        check_name(name)


def test_private_keys_are_refused_where_public_keys_belong() -> None:
    with pytest.raises(SigningKeyError, match="PRIVATE signing key"):
        load_public_keys([_PAIR[0]])


def test_key_ids_are_short_stable_and_distinct() -> None:
    assert key_id(PUB[0]) == key_id(KEY.public_key()) != key_id(OTHER_PUB[0])
    assert len(key_id(PUB[0])) == 16 and int(key_id(PUB[0]), 16) >= 0


def test_seal_then_unseal_gives_an_identical_river_model() -> None:
    model = trained()
    sealed = seal("risk", 7, pickle_model(model), {"learned": 20, "source": "unit"}, KEY, created_at=1.25)
    v = SnapshotVersion.parse(sealed.version)
    assert (v.name, v.number) == ("risk", 7) and sealed.manifest["sha256"].startswith(v.digest)
    loaded, manifest = unseal("risk", sealed.version, sealed.record, sealed.payload, PUB)
    assert isinstance(loaded, linear_model.LogisticRegression) and loaded is not model
    for x in ({"a": 0.0, "b": 1.0}, {"a": 2.0, "b": 1.0}, {"a": 5.0}):
        assert loaded.predict_proba_one(x) == model.predict_proba_one(x)
    assert manifest["meta"] == {"learned": 20, "source": "unit"} and manifest["created_at"] == 1.25
    assert manifest["key_id"] == key_id(PUB[0]) and manifest["size"] == len(sealed.payload)
    assert {"python", "river", "format", "scheme"} <= manifest.keys()
    assert _PAIR[0] not in sealed.record  # the private key is never stored


def test_same_model_same_digest_different_number() -> None:
    payload = pickle_model(trained())
    a, b = seal("risk", 1, payload, None, KEY), seal("risk", 2, payload, None, KEY)
    assert a.version.split("-")[2] == b.version.split("-")[2] and a.version != b.version


def _sealed() -> tuple[str, bytes, bytes]:
    s = seal("risk", 3, pickle_model(trained()), {"learned": 20}, KEY)
    return s.version, s.record, s.payload


def test_tampered_payload_is_refused() -> None:
    version, record, payload = _sealed()
    forged = pickle_model({"weights": "attacker's"})
    for bad in (forged, payload[:-1], payload + b"\x00", payload[:10] + b"X" + payload[11:]):
        with pytest.raises(SnapshotRefused, match="payload does not match its signed digest"):
            verify("risk", version, record, bad, PUB)


def test_tampered_manifest_or_signature_is_refused() -> None:
    version, record, payload = _sealed()
    signature, _, body = record.partition(b".")
    cases = [
        signature + b"." + body.replace(b'"learned":20', b'"learned":21'),  # meta edited
        signature[:-1] + (b"0" if signature[-1:] != b"0" else b"1") + b"." + body,  # signature edited
        b"ed25519:" + key_id(PUB[0]).encode() + b":" + b"0" * 128 + b"." + body,
    ]
    for bad in cases:
        with pytest.raises(SnapshotRefused, match="bad Ed25519 signature") as info:
            verify("risk", version, bad, payload, PUB)
        assert info.value.name == "risk" and info.value.version == version
    with pytest.raises(SnapshotRefused, match="malformed"):
        verify("risk", version, body.replace(b".", b""), payload, PUB)
    for old in (b"." + body, b"0" * 64 + b"." + body):
        with pytest.raises(SnapshotRefused, match="HMAC-signed"):
            verify("risk", version, old, payload, PUB)


def test_a_different_key_is_named_by_key_id_not_by_key() -> None:
    version, record, payload = _sealed()
    with pytest.raises(SnapshotRefused, match="signed by an untrusted key") as info:
        verify("risk", version, record, payload, OTHER_PUB)
    message = str(info.value)
    assert key_id(PUB[0]) in message and key_id(OTHER_PUB[0]) in message
    verify("risk", version, record, payload, OTHER_PUB + PUB)  # rotation: several trusted keys


def test_a_snapshot_cannot_be_replayed_under_another_name_or_version() -> None:
    version, record, payload = _sealed()
    with pytest.raises(SnapshotRefused, match="names another model"):
        verify("churn", version, record, payload, PUB)
    other_version = version.replace("-v3-", "-v4-")
    with pytest.raises(SnapshotRefused, match="signed manifest is for"):
        verify("risk", other_version, record, payload, PUB)
    with pytest.raises(SnapshotRefused, match="not a snapshot version"):
        verify("risk", "latest", record, payload, PUB)


def test_missing_parts_are_refused() -> None:
    version, record, payload = _sealed()
    with pytest.raises(SnapshotRefused, match="its record is missing"):
        verify("risk", version, None, payload, PUB)
    with pytest.raises(SnapshotRefused, match="its payload is missing"):
        verify("risk", version, record, None, PUB)


class Exploit:
    """Unpickling this creates a directory: evidence that unverified bytes ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (str(self.marker),))


def test_an_unverified_payload_is_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    version, record, _ = _sealed()
    evil = pickle.dumps(Exploit(marker))
    with pytest.raises(SnapshotRefused, match="payload does not match"):
        unseal("risk", version, record, evil, PUB)
    forged = seal("risk", 3, evil, None, OTHER)  # signed, but with a key this worker does not hold
    with pytest.raises(SnapshotRefused, match="untrusted key"):
        unseal("risk", forged.version, forged.record, forged.payload, PUB)
    assert not marker.exists()


def test_a_verified_payload_that_does_not_unpickle_is_refused() -> None:
    s = seal("risk", 1, b"\x80\x05not a pickle", None, KEY)
    with pytest.raises(SnapshotRefused, match="verified but cannot be unpickled here"):
        unseal("risk", s.version, s.record, s.payload, PUB)


def test_meta_must_be_json_and_small() -> None:
    with pytest.raises(UnknownSnapshot, match="JSON-serialisable"):
        seal("risk", 1, b"x", {"when": object()}, KEY)
    with pytest.raises(UnknownSnapshot, match="meta is too large"):
        seal("risk", 1, b"x", {"blob": "x" * 70_000}, KEY)


def test_an_older_snapshot_does_not_replace_a_newer_one_unless_a_signed_rollback() -> None:
    payload = pickle_model({"w": 1})
    old, new = seal("risk", 2, payload, None, KEY), seal("risk", 5, payload, None, KEY)
    with pytest.raises(SnapshotRefused, match="older than the running") as info:
        unseal("risk", old.version, old.record, old.payload, PUB, running=new.version)
    assert info.value.version == old.version
    unseal("risk", new.version, new.record, new.payload, PUB, running=old.version)  # forward: fine
    back = seal("risk", 6, payload, None, KEY, rollback_of=old.version)
    _, manifest = unseal("risk", back.version, back.record, back.payload, PUB, running=new.version)
    assert manifest["rollback_of"] == old.version  # signed: a worker cannot fake it
