"""Ed25519 signing for model snapshots and rule bundles. Pure, no I/O.

Asymmetric on purpose (issue 17, finding 6): only the publisher (the trainer, and the admin
CLI that publishes rules) holds the **private** key; workers hold **public** keys only, so a
compromised worker can verify but never sign. Several public keys may be trusted at once
(rotation); a signature names the key it was made with by its id (first 16 hex digits of
SHA-256 over the raw public key).

A signature over ``message`` is ``"ed25519:<key id>:<signature hex>"`` and covers
``domain + b"\\n" + message`` so a snapshot signature can never pass as a bundle signature.

>>> private, public = generate_keypair()
>>> signer = load_private_key(private)
>>> keys = load_public_keys([public])
>>> sig = sign(signer, "beacon-rules/1", b"manifest")
>>> sig.startswith("ed25519:" + key_id(keys[0]) + ":")
True
>>> verify(keys, "beacon-rules/1", b"manifest", sig)
>>> verify(keys, "beacon-model-snapshot/2", b"manifest", sig)
Traceback (most recent call last):
...
models.errors.SignatureRefused: bad Ed25519 signature (key ...)
>>> load_public_keys([private])
Traceback (most recent call last):
...
models.errors.SigningKeyError: a PRIVATE signing key was given where only public keys belong: ...
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from models.errors import SignatureRefused, SigningKeyError

PREFIX = "ed25519"
_PRIVATE_MARK = b"PRIVATE KEY"


def generate_keypair() -> tuple[bytes, bytes]:
    """A new key pair as (private PEM, public PEM)."""
    private = Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


def is_private(pem: bytes) -> bool:
    """True when ``pem`` holds a private key (a worker must refuse to start with one)."""
    return _PRIVATE_MARK in pem


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    """The publisher's signing key from PEM; a clear error when it is not an Ed25519 private key."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(f"the signing key file is not a PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(
            "the signing key is not an Ed25519 key; create one with: beacon keys generate DIR"
        )
    return key


def load_public_keys(pems: Iterable[bytes]) -> list[Ed25519PublicKey]:
    """Trusted public keys from PEM; refuses private keys and anything not Ed25519."""
    keys: list[Ed25519PublicKey] = []
    for pem in pems:
        if is_private(pem):
            raise SigningKeyError(
                "a PRIVATE signing key was given where only public keys belong: "
                "workers verify with BEACON_SIGNING_PUBLIC_KEYS and must never hold the private key"
            )
        try:
            key = serialization.load_pem_public_key(pem)
        except (ValueError, TypeError) as exc:
            raise SigningKeyError(f"not a PEM public key: {exc}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise SigningKeyError("a public key is not an Ed25519 key")
        keys.append(key)
    return keys


def key_id(key: Ed25519PublicKey) -> str:
    """First 16 hex digits of SHA-256 over the raw public key."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign(key: Ed25519PrivateKey, domain: str, message: bytes) -> str:
    """``"ed25519:<key id>:<hex>"`` over ``domain + "\\n" + message``."""
    signature = key.sign(domain.encode() + b"\n" + message)
    return f"{PREFIX}:{key_id(key.public_key())}:{signature.hex()}"


def verify(keys: Sequence[Ed25519PublicKey], domain: str, message: bytes, signature: str) -> None:
    """Returns when a trusted key made ``signature``; raises SignatureRefused otherwise."""
    parts = signature.split(":")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise SignatureRefused("not an Ed25519 signature (HMAC-signed data is no longer accepted)")
    by_id = {key_id(k): k for k in keys}
    key = by_id.get(parts[1])
    if key is None:
        raise SignatureRefused(f"signed by an untrusted key {parts[1]!r}")
    try:
        key.verify(bytes.fromhex(parts[2]), domain.encode() + b"\n" + message)
    except (InvalidSignature, ValueError):
        raise SignatureRefused(f"bad Ed25519 signature (key {parts[1]})") from None
