"""Alert webhooks: per-receiver secrets, a minimal signed body, durable retries.

Receivers come from the TOML file ``BEACON_ALERT_WEBHOOK_RECEIVERS``::

    [[receiver]]
    name = "pager"                      # metrics and logs name it
    url = "https://pager.bank/beacon"   # https:// only (see parse_receivers)
    severities = ["critical", "high"]   # or ["*"]
    secret_file = "/run/secrets/pager_hook"
    full_context = false                # true: the whole alert record, amounts and context

Each delivery is enqueued in Redis (engine/store/hookbox.py) before its first attempt and
retried with exponential backoff until ``alert_webhook_horizon_s``, then dead-lettered.
Each POST carries the JSON body and three headers:

    Beacon-Delivery: <uuid of the alert's event and the receiver, the same on every retry>
    Beacon-Timestamp: <unix seconds of this attempt>
    Beacon-Signature: v1=<hex HMAC-SHA256(secret, "<delivery>.<timestamp>.<body>")>

The receiver recomputes the HMAC with its own secret, rejects old timestamps and drops a
delivery id it has seen (delivery is at least once).

>>> signature("s3cret", "d1", "1700000000", b'{"a":1}')[:10]
'v1=48b160a'
>>> minimal({"event": "raised", "alert_id": "a1", "severity": "high", "rule_id": "r7",
...          "customer_id": "C1", "amount": 900, "context": {"x": 1}}, "https://c.bank")
{'event': 'raised', 'alert_id': 'a1', 'severity': 'high', 'typologies': [], 'rule_ids': ['r7'], \
'status': 'open', 'customer_id': 'C1', 'link': 'https://c.bank/console#alert=a1'}
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import time
import tomllib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import orjson

from engine.errors import ConfigError, StoreError
from engine.store.hookbox import Delivery, HookBox

log = logging.getLogger("beacon.webhooks")
_SEVERITIES = ("low", "medium", "high", "critical", "*")
_MAX_PAUSE_S = 3600.0
_KEYS = {"name", "url", "severities", "secret_file", "full_context"}


@dataclass(frozen=True)
class Receiver:
    name: str
    url: str
    severities: tuple[str, ...]
    secret: str = field(repr=False)  # never logged
    full_context: bool = False

    def wants(self, severity: str) -> bool:
        return "*" in self.severities or severity in self.severities


def parse_receivers(doc: Mapping[str, Any], base: Path, allow_http: bool = False) -> tuple[Receiver, ...]:
    """``https://`` only; ``allow_http`` (tests, development) lets ``http://`` reach a
    loopback host and nothing else, so a plain-text alert never crosses a network."""
    found: list[Receiver] = []
    entries = doc.get("receiver", [])
    if not isinstance(entries, list) or set(doc) - {"receiver"}:
        raise ConfigError("alert webhook receivers: write [[receiver]] tables only")
    for n, entry in enumerate(entries):
        where = f"alert webhook receiver {n + 1}"
        if not isinstance(entry, dict) or set(entry) - _KEYS:
            raise ConfigError(f"{where}: keys are name, url, severities, secret_file, full_context")
        name, url, sev = entry.get("name"), entry.get("url"), entry.get("severities")
        if not isinstance(name, str) or not name or name in {r.name for r in found}:
            raise ConfigError(f"{where}: a unique, non-empty name")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError(f"receiver {name}: url must be https://")
        if url.startswith("http://") and not (allow_http and _loopback(url)):
            raise ConfigError(
                f"receiver {name} ({host_of(url)}): use https:// (alert_webhook_allow_http lets "
                "http:// reach a loopback host only, for tests and development)"
            )
        if not isinstance(sev, list) or not sev or any(s not in _SEVERITIES for s in sev):
            raise ConfigError(f"receiver {name}: severities, a list of {', '.join(_SEVERITIES)}")
        full = entry.get("full_context", False)
        if not isinstance(full, bool):
            raise ConfigError(f"receiver {name}: full_context is true or false")
        found.append(Receiver(name, url, tuple(sev), _secret(name, entry.get("secret_file"), base), full))
    return tuple(found)


def _secret(name: str, path: Any, base: Path) -> str:
    if not isinstance(path, str) or not path:
        raise ConfigError(f"receiver {name}: secret_file, a file holding its own HMAC secret")
    try:
        secret = (base / path).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"receiver {name}: secret_file not readable ({type(exc).__name__})") from exc
    if len(secret) < 16:
        raise ConfigError(f"receiver {name}: the secret in secret_file is shorter than 16 characters")
    return secret


def load_receivers(path: str, allow_http: bool = False) -> tuple[Receiver, ...]:
    if not path:
        return ()
    try:
        doc = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"alert_webhook_receivers {path}: {exc}") from exc
    return parse_receivers(doc, Path(path).parent, allow_http)


def _loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_of(url: str) -> str:
    """What logs name for a receiver: its host (and port), never the path, query or
    credentials, where receivers often carry a token.

    >>> host_of("https://user:pw@siem.bank:8443/in/t0ken?key=k")
    'siem.bank:8443'
    """
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{host}:{parts.port}" if parts.port else host


def signature(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    signed = delivery_id.encode() + b"." + timestamp.encode() + b"." + body
    return "v1=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def minimal(payload: Mapping[str, Any], console_url: str) -> dict[str, Any]:
    """What a receiver gets by default: which alert, how severe, why, its status, whose and
    where to look; no amounts, no context."""
    alert_id = str(payload.get("alert_id", ""))
    rules = payload.get("rule_ids") or ([payload["rule_id"]] if payload.get("rule_id") else [])
    status = payload.get("status") or ("escalated" if payload.get("event") == "escalation" else "open")
    return {
        "event": payload.get("event"),
        "alert_id": alert_id,
        "severity": payload.get("severity"),
        "typologies": list(payload.get("typologies") or []),
        "rule_ids": list(rules),
        "status": status,
        "customer_id": payload.get("customer_id"),
        "link": f"{console_url.rstrip('/')}/console#alert={quote(alert_id, safe='')}",
    }


def delivery_id(payload: Mapping[str, Any], receiver: str) -> str:
    """The same for one alert's event to one receiver, however often the desk reads it.

    >>> delivery_id({"event": "raised", "alert_id": "a1"}, "pager")
    '5187fee2-fc73-52d8-a12a-e5331ec60945'
    """
    name = f"beacon-webhook|{payload.get('event')}|{payload.get('alert_id')}|{receiver}"
    return str(uuid.uuid5(uuid.NAMESPACE_URL, name))


class WebhookSender:
    """``notify`` enqueues (awaited: once it returns, the delivery is in Redis); ``run``
    is every worker's loop that claims, attempts and settles due deliveries."""

    def __init__(
        self,
        receivers: Sequence[Receiver],
        box: HookBox,
        metrics: Any = None,
        horizon_s: float = 86400.0,
        retry_s: float = 1.0,
        visibility_s: float = 30.0,
        console_url: str = "",
        batch: int = 16,
        poll_s: float = 0.5,
    ) -> None:
        self.receivers = {r.name: r for r in receivers}
        self.box, self.metrics = box, metrics
        self.horizon_ms, self.retry_s = int(horizon_s * 1000), retry_s
        self.visibility_ms, self.console_url = int(visibility_s * 1000), console_url
        self.batch, self.poll_s = batch, poll_s

    async def notify(self, severity: str, payload: Mapping[str, Any]) -> None:
        now_ms = int(time.time() * 1000)
        short = orjson.dumps(minimal(payload, self.console_url))
        for r in self.receivers.values():
            if r.wants(severity):
                body = orjson.dumps(dict(payload)) if r.full_context else short
                await self.box.enqueue(delivery_id(payload, r.name), r.name, body, now_ms)

    async def run(self) -> None:
        while True:
            try:
                done = await self.run_once()
            except StoreError as exc:
                log.warning("webhook deliveries not claimed: %s", exc)
                done = 0
            if not done:
                await asyncio.sleep(self.poll_s)

    async def run_once(self) -> int:
        """Claim the due deliveries, attempt them at once, settle each; the number claimed."""
        import aiohttp

        claimed = await self.box.claim(int(time.time() * 1000), self.visibility_ms, self.batch)
        if claimed:
            timeout = aiohttp.ClientTimeout(total=min(5.0, self.visibility_ms / 2000))
            async with aiohttp.ClientSession(timeout=timeout) as session:
                await asyncio.gather(*(self._attempt(session, d) for d in claimed))
        if self.metrics is not None:
            self.metrics.webhook_pending.set(await self.box.pending())
        return len(claimed)

    async def _attempt(self, session: Any, d: Delivery) -> None:
        import aiohttp

        receiver = self.receivers.get(d.receiver)
        if receiver is None:  # removed from the file meanwhile: kept for an operator
            await self.box.dead_letter(d, "receiver_unknown", int(time.time() * 1000))
            self._count("webhook_dead_letters", d.receiver)
            return
        stamp = str(int(time.time()))
        headers = {"Content-Type": "application/json", "Beacon-Delivery": d.id, "Beacon-Timestamp": stamp,
                   "Beacon-Signature": signature(receiver.secret, d.id, stamp, d.body)}  # fmt: skip
        try:
            async with session.post(receiver.url, data=d.body, headers=headers) as resp:
                if resp.status < 300:
                    await self.box.settle(d.id)
                    self._count("webhook_sent", d.receiver)
                    return
                problem = f"HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            problem = type(exc).__name__
        now_ms = int(time.time() * 1000)
        pause_ms = int(min(self.retry_s * 2 ** (d.attempts - 1), _MAX_PAUSE_S) * 1000)
        if now_ms + pause_ms - d.first_ms > self.horizon_ms:
            log.error("webhook %s to %s (%s): dead-lettered after %d attempts (%s)",
                      d.id, receiver.name, host_of(receiver.url), d.attempts, problem)  # fmt: skip
            await self.box.dead_letter(d, problem, now_ms)
            self._count("webhook_dead_letters", d.receiver)
            return
        log.info("webhook %s to %s (%s): attempt %d failed (%s); retrying in %ss", d.id,
                 receiver.name, host_of(receiver.url), d.attempts, problem, pause_ms / 1000)  # fmt: skip
        await self.box.reschedule(d.id, now_ms + pause_ms)
        self._count("webhook_retries", d.receiver)

    def _count(self, name: str, receiver: str) -> None:
        if self.metrics is not None:
            getattr(self.metrics, name).labels(receiver).inc()
