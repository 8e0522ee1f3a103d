"""Sealing and opening model snapshots: pickle, sign, verify, unpickle. Pure, no I/O.

A stored snapshot has two parts:

- the **payload**: the pickled model. Unpickling runs code chosen by whoever wrote the
  bytes, so a payload is unpickled only after its signature and digest verify;
- the **record**: ``<signature hex>.<manifest JSON>``. The manifest names the model, the
  version, the payload's SHA-256 and size, the publisher's clock, the signing key's id,
  the Python and River versions, and the publisher's ``meta``.

The signature is ``HMAC-SHA256(key, b"beacon-model-snapshot/1\\n" + manifest bytes)``
over the manifest exactly as stored (no re-encoding, so no canonical-JSON pitfalls). The
manifest binds ``name``, ``version`` and ``sha256(payload)``, so the signed statement is
"``name`` | ``version`` | ``sha256(payload)``" plus the metadata, and a snapshot cannot be
replayed under another model's name or another version string.

A version reads ``<name>-v<n>-<sha12>``: ``n`` counts the model's publishes, ``sha12``
is the first 12 hex digits of the payload's SHA-256.

>>> v = SnapshotVersion.parse("offer_propensity-v12-0123456789ab")
>>> v.name, v.number, v.digest, str(v)
('offer_propensity', 12, '0123456789ab', 'offer_propensity-v12-0123456789ab')
>>> key = signing_key("k" * 32)
>>> sealed = seal("churn", 3, pickle_model({"w": 1.5}), {"learned": 10}, key)
>>> sealed.version.startswith("churn-v3-")
True
>>> model, manifest = unseal("churn", sealed.version, sealed.record, sealed.payload, key)
>>> model, manifest["meta"]
({'w': 1.5}, {'learned': 10})
"""

from __future__ import annotations

import hashlib
import hmac
import pickle
import platform
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from typing import Any

import orjson

from models.errors import SigningKeyError, SnapshotRefused, UnknownSnapshot

SCHEME = "beacon-model-snapshot/1"
MIN_KEY_CHARS = 32
MAX_META_BYTES = 64 * 1024
KEY_HINT = 'generate one with: python -c "import secrets; print(secrets.token_hex(32))"'
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


def key_problem(key: str) -> str | None:
    """What is wrong with a configured signing key, or None. For ``beacon doctor``-style
    checks; never echoes the key.

    >>> print(key_problem("short"))  # doctest: +ELLIPSIS
    model_signing_key is too short (5 characters, at least 32 needed): ...
    >>> key_problem("x" * 32) is None
    True
    """
    if not key:
        return (
            "model_signing_key is not set: model snapshots are neither published nor loaded; "
            f"set BEACON_MODEL_SIGNING_KEY ({KEY_HINT})"
        )
    if len(key) < MIN_KEY_CHARS:
        return (
            f"model_signing_key is too short ({len(key)} characters, at least {MIN_KEY_CHARS} needed): "
            f"model snapshots are neither published nor loaded ({KEY_HINT})"
        )
    return None


def signing_key(key: str) -> bytes:
    """The key as bytes (its UTF-8 encoding), or :class:`SigningKeyError`."""
    problem = key_problem(key)
    if problem:
        raise SigningKeyError(problem)
    return key.encode()


def key_id(key: bytes) -> str:
    """A short public id of a key, recorded in each manifest so that a worker holding a
    different key says so instead of only "bad signature". It is an HMAC output, so it
    reveals nothing about the key beyond what any signature already does."""
    return hmac.new(key, b"beacon-model-key-id", hashlib.sha256).hexdigest()[:8]


def sign(key: bytes, manifest: bytes) -> str:
    return hmac.new(key, SCHEME.encode() + b"\n" + manifest, hashlib.sha256).hexdigest()


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
    key: bytes,
    created_at: float | None = None,
) -> Sealed:
    """Name, describe and sign a pickled model as version ``number`` of ``name``."""
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
        "key_id": key_id(key),
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
    return Sealed(version, sign(key, body).encode() + b"." + body, payload, manifest)


def verify(
    name: str, version: str, record: bytes | None, payload: bytes | None, key: bytes
) -> dict[str, Any]:
    """The manifest of a stored snapshot once everything checks, else :class:`SnapshotRefused`.

    Checks, in order: the version string is this model's; record and payload are present;
    the signature over the manifest verifies (constant-time comparison); the manifest names
    this model and this version; the payload has the signed size and SHA-256."""
    try:
        if SnapshotVersion.parse(version).name != name:
            raise SnapshotRefused(name, version, "the version names another model")
    except UnknownSnapshot:
        raise SnapshotRefused(name, version, "not a snapshot version of this model") from None
    if record is None or payload is None:
        raise SnapshotRefused(name, version, f"its {'record' if record is None else 'payload'} is missing")
    signature, dot, body = record.partition(b".")
    if not dot or len(signature) != 64:
        raise SnapshotRefused(name, version, "its record is malformed (no signature)")
    if not hmac.compare_digest(signature, sign(key, body).encode()):
        raise SnapshotRefused(name, version, _signature_failure(body, key))
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


def _signature_failure(body: bytes, key: bytes) -> str:
    """Why a signature failed, as far as the unverified manifest can tell (key ids only)."""
    try:
        claimed = orjson.loads(body).get("key_id")
    except (orjson.JSONDecodeError, AttributeError):
        claimed = None
    mine = key_id(key)
    if isinstance(claimed, str) and claimed != mine and re.fullmatch(r"[0-9a-f]{8}", claimed):
        return (
            f"bad signature: signed with key id {claimed}, this worker's key id is {mine} "
            "(a different model_signing_key?)"
        )
    return "bad signature (the manifest or signature was altered, or it was signed with another key)"


def unseal(
    name: str, version: str, record: bytes | None, payload: bytes | None, key: bytes
) -> tuple[object, dict[str, Any]]:
    """Verify, then (only then) unpickle. Returns the model and its manifest.

    Blocking and CPU-bound for big models: call it in a thread (``asyncio.to_thread``)."""
    manifest = verify(name, version, record, payload, key)
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
