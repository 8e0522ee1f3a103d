"""Sealing and opening model snapshots: pickle, sign, verify, unpickle. Pure, no I/O.

A stored snapshot has two parts:

- the **payload**: the pickled model. Unpickling runs code chosen by whoever wrote the
  bytes, so a payload is unpickled only after its signature and digest verify;
- the **record**: ``<signature>.<manifest JSON>``. The manifest names the model, the
  version, the payload's SHA-256 and size, the publisher's clock, the signing key's id,
  ``rollback_of`` (a signed rollback), the Python and River versions, and ``meta``.

The signature is Ed25519 (``models/ed25519.py``, ``ed25519:<key id>:<hex>``) over
``b"beacon-model-snapshot/2\n" + manifest bytes``, exactly as stored. Only the publisher
(trainer, admin CLI) holds the private key; workers verify with public keys, so a worker
cannot sign a snapshot other workers load (issue 17, finding 6). The manifest binds
``name``, ``version`` and ``sha256(payload)``, so a snapshot cannot be replayed under
another model's name or another version string. HMAC-signed (``/1``) snapshots are refused.

A version reads ``<name>-v<n>-<sha12>``: ``n`` counts the model's publishes, ``sha12``
is the first 12 hex digits of the payload's SHA-256.

>>> v = SnapshotVersion.parse("offer_propensity-v12-0123456789ab")
>>> v.name, v.number, v.digest, str(v)
('offer_propensity', 12, '0123456789ab', 'offer_propensity-v12-0123456789ab')
>>> private, public = generate_keypair()
>>> signer, trusted = load_private_key(private), load_public_keys([public])
>>> sealed = seal("churn", 3, pickle_model({"w": 1.5}), {"learned": 10}, signer)
>>> sealed.version.startswith("churn-v3-")
True
>>> model, manifest = unseal("churn", sealed.version, sealed.record, sealed.payload, trusted)
>>> model, manifest["meta"]
({'w': 1.5}, {'learned': 10})
"""

from __future__ import annotations

import hashlib
import pickle
import platform
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from models import ed25519
from models.ed25519 import generate_keypair, load_private_key, load_public_keys
from models.errors import SignatureRefused, SnapshotRefused, UnknownSnapshot

__all__ = ["generate_keypair", "load_private_key", "load_public_keys"]

SCHEME = "beacon-model-snapshot/2"
OLD_SCHEME = "beacon-model-snapshot/1"
MAX_META_BYTES = 64 * 1024
_NAME = re.compile(r"[a-z][a-z0-9_]{0,47}")
_VERSION = re.compile(r"([a-z][a-z0-9_]{0,47})-v([1-9][0-9]{0,17})-([0-9a-f]{12})")


def check_name(name: str) -> str:
    """A model name: lower-case letters, digits and ``_``, starting with a letter.

    >>> check_name("risk")
    'risk'
    >>> check_name("Risk")
    Traceback (most recent call last):
    ...
    models.errors.UnknownSnapshot: 'Risk' is not a model name (a-z, 0-9 and _, starting with a-z; 48 at most)
    """
    if not _NAME.fullmatch(name):
        raise UnknownSnapshot(f"{name!r} is not a model name (a-z, 0-9 and _, starting with a-z; 48 at most)")
    return name


@dataclass(frozen=True)
class SnapshotVersion:
    """A parsed snapshot version ``<name>-v<n>-<sha12>``."""

    name: str
    number: int
    digest: str

    @classmethod
    def parse(cls, version: str) -> SnapshotVersion:
        m = _VERSION.fullmatch(version)
        if not m:
            raise UnknownSnapshot(
                f"{version!r} is not a model snapshot version (they look like risk-v12-0123456789ab)"
            )
        return cls(m[1], int(m[2]), m[3])

    def __str__(self) -> str:
        return f"{self.name}-v{self.number}-{self.digest}"


def pickle_model(model: object) -> bytes:
    """Pickle on the caller's thread: a trainer calls this on its event loop, between two
    ``learn_one`` calls, so the snapshot is one consistent state of the model."""
    return pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)


@cache
def _environment() -> dict[str, str]:
    try:
        river = metadata.version("river")
    except metadata.PackageNotFoundError:  # pragma: no cover - river is a dependency
        river = "absent"
    return {"python": platform.python_version(), "river": river}


@dataclass(frozen=True)
class Sealed:
    version: str
    record: bytes  # b"<signature hex>.<manifest JSON>"
    payload: bytes
    manifest: dict[str, Any]


def seal(
    name: str,
    number: int,
    payload: bytes,
    meta: Mapping[str, Any] | None,
    key: Ed25519PrivateKey,
    created_at: float | None = None,
    rollback_of: str | None = None,
) -> Sealed:
    """Name, describe and sign a pickled model as version ``number`` of ``name``.
    ``rollback_of``: the older version whose payload this republishes (a signed rollback)."""
    check_name(name)
    digest = hashlib.sha256(payload).hexdigest()
    version = str(SnapshotVersion(name, number, digest[:12]))
    manifest = {
        "scheme": SCHEME,
        "name": name,
        "version": version,
        "number": number,
        "sha256": digest,
        "size": len(payload),
        "format": "pickle",
        "created_at": round(time.time() if created_at is None else created_at, 3),
        "key_id": ed25519.key_id(key.public_key()),
        **({"rollback_of": rollback_of} if rollback_of else {}),
        **_environment(),
        "meta": dict(meta or {}),
    }
    try:
        body = orjson.dumps(manifest)
    except TypeError as exc:
        raise UnknownSnapshot(f"model {name}: meta must be JSON-serialisable ({exc})") from exc
    if len(body) > MAX_META_BYTES:
        raise UnknownSnapshot(
            f"model {name}: meta is too large ({len(body)} bytes, at most {MAX_META_BYTES})"
        )
    signature = ed25519.sign(key, SCHEME, body)
    return Sealed(version, signature.encode() + b"." + body, payload, manifest)


def verify(
    name: str,
    version: str,
    record: bytes | None,
    payload: bytes | None,
    keys: Sequence[Ed25519PublicKey],
) -> dict[str, Any]:
    """The manifest of a stored snapshot once everything checks, else :class:`SnapshotRefused`.

    Checks, in order: the version string is this model's; record and payload are present;
    the Ed25519 signature over the manifest verifies with a trusted public key; the manifest names
    this model and this version; the payload has the signed size and SHA-256."""
    try:
        if SnapshotVersion.parse(version).name != name:
            raise SnapshotRefused(name, version, "the version names another model")
    except UnknownSnapshot:
        raise SnapshotRefused(name, version, "not a snapshot version of this model") from None
    if record is None or payload is None:
        raise SnapshotRefused(name, version, f"its {'record' if record is None else 'payload'} is missing")
    signature, dot, body = record.partition(b".")
    if not dot:
        raise SnapshotRefused(name, version, "its record is malformed (no signature)")
    if not signature.startswith(b"ed25519:"):
        raise SnapshotRefused(
            name,
            version,
            "HMAC-signed (an old snapshot format): republish it with the Ed25519 signing key "
            "(signing_key_file) before workers load it",
        )
    try:
        ed25519.verify(keys, SCHEME, body, signature.decode("ascii", "replace"))
    except SignatureRefused as exc:
        raise SnapshotRefused(name, version, f"{exc} (trusted: {_ids(keys)})") from None
    manifest: dict[str, Any] = orjson.loads(body)  # signed by us: well-formed
    if manifest.get("scheme") != SCHEME:
        raise SnapshotRefused(name, version, f"unknown scheme {manifest.get('scheme')!r}")
    if manifest.get("name") != name or manifest.get("version") != version:
        raise SnapshotRefused(
            name,
            version,
            f"the signed manifest is for {manifest.get('version')!r}: a snapshot stored under another name",
        )
    if len(payload) != manifest.get("size") or hashlib.sha256(payload).hexdigest() != manifest.get("sha256"):
        raise SnapshotRefused(
            name, version, "the payload does not match its signed digest (tampered or corrupt)"
        )
    return manifest


def _ids(keys: Sequence[Ed25519PublicKey]) -> str:
    return ", ".join(ed25519.key_id(k) for k in keys) or "no public keys"


def unseal(
    name: str,
    version: str,
    record: bytes | None,
    payload: bytes | None,
    keys: Sequence[Ed25519PublicKey],
    running: str | None = None,
) -> tuple[object, dict[str, Any]]:
    """Verify, then (only then) unpickle. Returns the model and its manifest.

    Blocking and CPU-bound for big models: call it in a thread (``asyncio.to_thread``)."""
    manifest = verify(name, version, record, payload, keys)
    check_not_older(name, version, manifest, running)
    assert payload is not None  # verify refuses a missing payload
    try:
        model = pickle.loads(payload)
    except Exception as exc:
        raise SnapshotRefused(
            name,
            version,
            f"verified but cannot be unpickled here ({type(exc).__name__}: {exc}; published with "
            f"python {manifest.get('python')}, river {manifest.get('river')})",
        ) from exc
    return model, manifest


def check_not_older(name: str, version: str, manifest: Mapping[str, Any], running: str | None) -> None:
    """Versions only go up: refuse a verified snapshot numbered below ``running`` (the
    version a worker runs) unless its signed manifest says ``rollback_of``. A replayed old,
    validly signed snapshot cannot take a worker back.

    >>> check_not_older("churn", "churn-v2-0123456789ab", {"number": 2}, "churn-v3-0123456789ab")
    Traceback (most recent call last):
    ...
    models.errors.SnapshotRefused: model churn: snapshot ... and not a signed rollback
    >>> rollback = {"number": 2, "rollback_of": "churn-v1-0123456789ab"}
    >>> check_not_older("churn", "churn-v2-0123456789ab", rollback, "churn-v3-0123456789ab")
    """
    if running is None or manifest.get("rollback_of"):
        return
    try:
        current = SnapshotVersion.parse(running).number
    except UnknownSnapshot:
        return
    if int(manifest.get("number", 0)) < current:
        raise SnapshotRefused(name, version, f"older than the running {running} and not a signed rollback")
