"""Alert webhooks per severity: retried with backoff, signed so the receiver can verify.

Targets come from ``BEACON_ALERT_WEBHOOKS`` as ``severity=url`` entries (``*`` for every
severity), for example ``critical=https://pager.bank/beacon,*=https://siem.bank/in``.
Each POST carries the JSON body and two headers:

    X-Beacon-Timestamp: <unix seconds>
    X-Beacon-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" with the shared secret>

The receiver recomputes the HMAC and rejects old timestamps (replays).

>>> targets = parse_targets(("critical=https://a/x", "*=https://b/y"))
>>> targets.urls_for("critical"), targets.urls_for("low")
(('https://a/x', 'https://b/y'), ('https://b/y',))
>>> signature("s3cret", "1700000000", b'{"a":1}')[:16]
'sha256=1698a50bc'
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson

from engine.errors import ConfigError

log = logging.getLogger("beacon.webhooks")
_SEVERITIES = ("low", "medium", "high", "critical", "*")
BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0)  # then the delivery is given up, logged and counted


@dataclass(frozen=True)
class Targets:
    by_severity: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def urls_for(self, severity: str) -> tuple[str, ...]:
        return self.by_severity.get(severity, ()) + self.by_severity.get("*", ())


def parse_targets(entries: Iterable[str], allow_http: bool = False) -> Targets:
    """``https://`` only; ``allow_http`` (tests, development) lets ``http://`` reach a
    loopback host and nothing else, so a plain-text alert never crosses a network."""
    found: dict[str, tuple[str, ...]] = {}
    for entry in entries:
        severity, sep, url = entry.partition("=")
        if not sep or severity not in _SEVERITIES or not url.startswith(("http://", "https://")):
            raise ConfigError(
                f"alert webhook {entry!r}: write severity=url, severity one of {', '.join(_SEVERITIES)}"
            )
        if url.startswith("http://") and not (allow_http and _loopback(url)):
            raise ConfigError(
                f"alert webhook to {host_of(url)}: use https:// (alert_webhook_allow_http lets "
                "http:// reach a loopback host only, for tests and development)"
            )
        found[severity] = (*found.get(severity, ()), url)
    return Targets(found)


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


def signature(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class WebhookSender:
    """Posts in the background (a slow receiver never holds up the alert desk), at most
    ``max_concurrent`` at once; a delivery beyond ``max_pending`` waiting ones is not
    attempted but counted and logged like one given up, so a receiver that hangs costs
    bounded memory and connections, and the loss is visible."""

    def __init__(
        self,
        targets: Targets,
        secret: str,
        failures: Any = None,
        backoff: tuple[float, ...] = BACKOFF_S,
        max_concurrent: int = 16,
        max_pending: int = 1000,
    ) -> None:
        self.targets = targets
        self.secret = secret
        self.failures = failures  # a Prometheus counter with a "severity" label, or None
        self.backoff = backoff
        self.max_pending = max_pending
        self._slots = asyncio.Semaphore(max_concurrent)
        self._tasks: set[asyncio.Task[None]] = set()

    def notify(self, severity: str, payload: Mapping[str, Any]) -> None:
        body = orjson.dumps(payload)
        for url in self.targets.urls_for(severity):
            if len(self._tasks) >= self.max_pending:
                log.error(
                    "webhook to %s: %d deliveries pending; this one is not sent",
                    host_of(url),
                    len(self._tasks),
                )
                self._count_failure(severity)
                continue
            task = asyncio.get_running_loop().create_task(self._deliver_when_free(url, severity, body))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliver_when_free(self, url: str, severity: str, body: bytes) -> None:
        async with self._slots:
            await self._deliver(url, severity, body)

    def _count_failure(self, severity: str) -> None:
        if self.failures is not None:
            self.failures.labels(severity).inc()

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _deliver(self, url: str, severity: str, body: bytes) -> None:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for attempt, pause in enumerate((*self.backoff, None)):
                stamp = str(int(time.time()))
                headers = {"Content-Type": "application/json", "X-Beacon-Timestamp": stamp,
                           "X-Beacon-Signature": signature(self.secret, stamp, body)}  # fmt: skip
                try:
                    async with session.post(url, data=body, headers=headers) as resp:
                        if resp.status < 300:
                            return
                        problem = f"HTTP {resp.status}"
                except (aiohttp.ClientError, TimeoutError) as exc:
                    problem = type(exc).__name__
                if pause is None:
                    break
                log.info(
                    "webhook to %s: attempt %d failed (%s); retrying in %ss",
                    host_of(url),
                    attempt + 1,
                    problem,
                    pause,
                )
                await asyncio.sleep(pause)
        log.error("webhook to %s: gave up after %d attempts", host_of(url), len(self.backoff) + 1)
        self._count_failure(severity)
