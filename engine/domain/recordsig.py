"""Signed records on the topics Beacon trusts (``risk.alerts``, ``feedback``,
``decisions.audit``, ``decisions.shadow``): HMAC-SHA256 over topic, key and value, in the ``beacon-sig``
header as ``KEY_ID:HEX``. The key id lets keys rotate: a consumer accepts every key in
its verify set, a producer signs with one. Pure: no I/O.

>>> keys = parse_keys("k1=secret-one,k2=secret-two")
>>> h = sign("risk.alerts", b"c1", b"{}", "k1", keys["k1"])
>>> verify("risk.alerts", b"c1", b"{}", [h], keys)
>>> verify("risk.alerts", b"c1", b'{"forged":1}', [h], keys)
'record_forged'
>>> verify("risk.alerts", b"c1", b"{}", [], keys)
'record_unsigned'
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping

from engine.errors import ConfigError
from engine.settings import Settings

HEADER = "beacon-sig"
SIGNED_TOPICS = ("risk.alerts", "feedback", "decisions.audit", "decisions.shadow")
REASONS = ("record_unsigned", "record_forged", "record_unknown_key")


def parse_keys(spec: str) -> dict[str, bytes]:
    """``"id=secret,id2=secret2"`` -> {id: secret}; refuses an entry without both parts."""
    out: dict[str, bytes] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        kid, sep, secret = part.partition("=")
        if not sep or not kid.strip() or not secret or ":" in kid:
            raise ConfigError("record_verify_keys: expected 'key_id=secret' entries separated by commas")
        out[kid.strip()] = secret.encode()
    return out


def _digest(topic: str, key: bytes | None, value: bytes, secret: bytes) -> str:
    mac = hmac.new(secret, digestmod=hashlib.sha256)
    for part in (topic.encode(), key or b"", value):  # length-prefixed: no ambiguity between parts
        mac.update(len(part).to_bytes(8, "big"))
        mac.update(part)
    return mac.hexdigest()


def sign(topic: str, key: bytes | None, value: bytes, key_id: str, secret: bytes) -> tuple[str, bytes]:
    """The header to attach to the record."""
    return HEADER, f"{key_id}:{_digest(topic, key, value, secret)}".encode()


def verify(
    topic: str,
    key: bytes | None,
    value: bytes,
    headers: Iterable[tuple[str, bytes]] | None,
    keys: Mapping[str, bytes],
) -> str | None:
    """None when the record carries a valid signature by one of ``keys``, else the reason."""
    sigs = [v for k, v in (headers or ()) if k == HEADER]
    if not sigs:
        return "record_unsigned"
    kid, _, digest = bytes(sigs[-1]).decode("utf-8", "replace").partition(":")
    secret = keys.get(kid)
    if secret is None:
        return "record_unknown_key"
    if not hmac.compare_digest(digest, _digest(topic, key, value, secret)):
        return "record_forged"
    return None


class RecordSigner:
    """Signs and verifies with one process's keys. ``enforced``: verify keys are
    configured, so unsigned and forged records are refused."""

    def __init__(self, signing_key: str, key_id: str, verify_keys: str, prefixed: Iterable[str]) -> None:
        self.key_id = key_id
        self.secret = signing_key.encode()
        self.keys = parse_keys(verify_keys)
        if signing_key:
            self.keys.setdefault(key_id, self.secret)
        self.topics = frozenset(prefixed)

    @property
    def enforced(self) -> bool:
        return bool(self.keys)

    def headers(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]] | None
    ) -> list[tuple[str, bytes]] | None:
        """``headers`` plus the signature when ``topic`` is signed and a key is set."""
        if not self.secret or topic not in self.topics:
            return headers
        return [*(headers or []), sign(topic, key, value, self.key_id, self.secret)]

    def refusal(
        self, topic: str, key: bytes | None, value: bytes, headers: Iterable[tuple[str, bytes]] | None
    ) -> str | None:
        """Why a consumed record is refused, or None (also None when nothing is enforced)."""
        if not self.enforced:
            return None
        return verify(topic, key, value, headers, self.keys)


def record_signer(settings: Settings) -> RecordSigner:
    """The process's signer and verifier for the signed topics (named with its topic prefix):
    one for every producer and consumer of them."""
    return RecordSigner(
        settings.record_signing_key,
        settings.record_key_id,
        settings.record_verify_keys,
        (settings.topic(t) for t in SIGNED_TOPICS),
    )
