"""Errors of the models package, under Beacon's one base class.

Redis failures stay :class:`engine.errors.StoreError` (raised at the adapter's boundary);
what goes wrong with a model or its snapshots is a :class:`ModelError`.
"""

from __future__ import annotations

from engine.errors import BeaconError


class ModelError(BeaconError):
    """Base class of every error the models package raises on purpose."""


class SigningKeyError(ModelError):
    """An Ed25519 key file is missing, unreadable or of the wrong kind: no snapshot is published or loaded."""


class SnapshotRefused(ModelError):
    """A stored snapshot failed verification (signature, integrity, name or version) or
    could not be loaded after it passed. Its bytes were never unpickled unless verified.

    ``reason`` is a short, stable phrase (safe to log: it never contains key material).
    """

    def __init__(self, name: str, version: str, reason: str) -> None:
        super().__init__(f"model {name}: snapshot {version} refused: {reason}")
        self.name = name
        self.version = version
        self.reason = reason


class SnapshotConflict(ModelError):
    """A publish was refused because the current version is not the one the publisher
    started from: two trainers are publishing the same model (learning has forked)."""


class UnknownSnapshot(ModelError):
    """A model name or version that is not valid or not stored."""


class SignatureRefused(ModelError):
    """An Ed25519 signature (snapshot or rule bundle) is missing, malformed, made by an
    untrusted key, or does not verify. The signed data is not used."""
