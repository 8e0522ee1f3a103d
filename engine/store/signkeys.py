"""The Ed25519 keys named by the settings, read from their files (issue 17, finding 6).

``signing_key_file``: the private key PEM; only the trainer and the admin CLI set it.
``signing_public_keys``: comma list of public key PEM files (several during a rotation);
every process that loads snapshots sets it. Errors are :class:`SigningKeyError` and never
contain key material.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from engine.settings import Settings
from models.ed25519 import load_private_key, load_public_keys
from models.errors import SigningKeyError

HINT = "create a key pair with: beacon keys generate DIR"


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SigningKeyError(f"{what} {path!r} cannot be read ({exc.strerror}); {HINT}") from None


def signer(settings: Settings) -> Ed25519PrivateKey:
    """The publisher's private key, or :class:`SigningKeyError` (model snapshots are not published)."""
    if not settings.signing_key_file:
        raise SigningKeyError(
            "signing_key_file is not set: model snapshots are not published "
            f"(set BEACON_SIGNING_KEY_FILE on the trainer only; {HINT})"
        )
    return load_private_key(_read(settings.signing_key_file, "signing_key_file"))


def public_key_files(settings: Settings) -> list[str]:
    return [p.strip() for p in settings.signing_public_keys.split(",") if p.strip()]


def trusted(settings: Settings) -> list[Ed25519PublicKey]:
    """The trusted public keys, or :class:`SigningKeyError` (no snapshot is loaded)."""
    files = public_key_files(settings)
    if not files:
        raise SigningKeyError(
            "signing_public_keys is not set: model snapshots are not loaded "
            f"(set BEACON_SIGNING_PUBLIC_KEYS to the public key files; {HINT})"
        )
    return load_public_keys(_read(path, "signing_public_keys file") for path in files)
