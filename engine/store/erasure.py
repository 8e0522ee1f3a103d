"""A customer's right to erasure (issue 17, finding 10): ``beacon customers erase ID``.

What goes: every key of the customer (state, profile and its history, dedupe answers,
suppressions: one hash tag, found by SCAN on the customer's own key), the customer in the
device indexes it appears in, the trainer's latest-decision record and pending churn
label, the desk's grouping keys and its index of the customer's alerts (the alerts move to
the reference's). What is kept but made anonymous: the desk's alerts of the
customer (a bank keeps its fraud alerts), whose ``customer_id`` becomes a reference
(``erased:`` and 16 hex of SHA-256), whose context (amounts, places, devices, conditions)
is dropped, and whose trail notes are blanked; so are webhook deliveries still queued or
dead-lettered about the customer (engine/store/hookbox.py). An entry in the erasure log
(``P:erasures``, a stream) says who erased which reference when, and how much.

What this cannot reach: records already on Kafka topics (``decisions.audit``, ``decisions.shadow``,
``risk.alerts``, ``feedback``) cannot be rewritten; they age out with each topic's
retention (README, Privacy and retention). The trainer's inputs of single decisions
(``P:fb:x:<decision>``) are keyed by decision, not customer, and expire with
``feedback_ttl_s``.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError, WatchError

from engine.errors import StoreError
from engine.settings import Settings
from engine.store import keys
from engine.store.hookbox import HookBox
from engine.store.layout import KeyLayout

ERASED_NOTE = "(erased)"
_LOG_BOUND = 100_000


def reference(customer_id: str) -> str:
    """The anonymous reference an erased customer's alerts and log entry carry.

    >>> reference("C000042")
    'erased:8bace91dd866f585'
    """
    return "erased:" + hashlib.sha256(customer_id.encode()).hexdigest()[:16]


@dataclass
class Erasure:
    customer_ref: str
    keys: list[str] = field(default_factory=list)  # deleted (or, on a dry run, to delete)
    devices: list[str] = field(default_factory=list)  # device indexes the customer leaves
    alerts: list[str] = field(default_factory=list)  # desk alerts made anonymous
    webhooks: int = 0  # queued or dead webhook deliveries made anonymous

    def summary(self) -> dict[str, Any]:
        return {"customer": self.customer_ref, "keys": len(self.keys), "devices": len(self.devices),
                "alerts": len(self.alerts), "webhooks": self.webhooks}  # fmt: skip


class Eraser:
    def __init__(self, client: aioredis.Redis, settings: Settings) -> None:
        self._r = client
        self.s = settings
        self.layout = KeyLayout.of(settings.key_prefix, settings.redis_cluster, settings.redis_slot_groups)
        self.desk = keys.DeskKeys.of(settings.key_prefix)
        self.fb = keys.FeedbackKeys.of(settings.key_prefix)
        self.log_key = f"{settings.key_prefix}:erasures"

    async def plan(self, customer_id: str) -> Erasure:
        """What :meth:`erase` would do, changing nothing."""
        try:
            return await self._plan(customer_id)
        except RedisError as exc:
            raise StoreError(f"erasure: {exc}") from exc

    async def erase(self, customer_id: str, by: str, now: float | None = None) -> Erasure:
        try:
            plan = await self._plan(customer_id)
            for device_key in plan.devices:
                await self._r.zrem(device_key, customer_id)
            for alert_id in plan.alerts:
                await self._anonymise(alert_id, plan.customer_ref)
            plan.webhooks = await HookBox(self._r, self.s.key_prefix).anonymise(
                customer_id, plan.customer_ref
            )
            for key in plan.keys:  # one by one: on a cluster each may live on another node
                await self._r.delete(key)
            await self._r.zrem(self.fb.pending("churn"), customer_id)
            entry = {**plan.summary(), "by": by, "at": now if now is not None else time.time()}
            await self._r.xadd(self.log_key, {"entry": orjson.dumps(entry)}, maxlen=_LOG_BOUND)
        except RedisError as exc:
            raise StoreError(f"erasure: {exc}") from exc
        return plan

    async def log(self, limit: int = 100) -> list[dict[str, Any]]:
        try:
            raw = await self._r.xrevrange(self.log_key, count=limit)
        except RedisError as exc:
            raise StoreError(f"erasure log: {exc}") from exc
        return [orjson.loads(fields[b"entry"]) for _, fields in raw or [] if fields]

    async def _plan(self, customer_id: str) -> Erasure:
        plan = Erasure(reference(customer_id))
        base = self.layout.customer(customer_id)
        found = {_text(k) async for k in self._r.scan_iter(match=_escape(base) + ":*", count=500)}
        devices = await self._r.zrange(base + keys.DEVICES, 0, -1)
        plan.devices = [self.layout.device(_text(d)) for d in devices]
        for extra in (self.fb.last(customer_id), self.desk.index("cu", customer_id)):
            if await self._r.exists(extra):
                found.add(extra)
        match = _escape(self.desk.groups + customer_id) + "|*"
        found |= {_text(k) async for k in self._r.scan_iter(match=match, count=500)}
        plan.keys = sorted(found)
        plan.alerts = await self._alerts_of(customer_id)
        return plan

    async def _alerts_of(self, customer_id: str) -> list[str]:
        """The desk's alerts of the customer: the whole time index (alert_retention_s)."""
        ids = [_text(i) for i in await self._r.zrange(self.desk.by_time, 0, -1)]
        out = []
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            docs = await self._r.mget([self.desk.alert(i) for i in chunk])
            out += [i for i, raw in zip(chunk, docs, strict=True) if raw and _customer_of(raw) == customer_id]
        return out

    async def _anonymise(self, alert_id: str, ref: str) -> None:
        """The alert and its trail without personal data, in one transaction (an officer
        working the alert meanwhile makes it start again)."""
        doc_key, trail_key = self.desk.alert(alert_id), self.desk.audit(alert_id)
        for _ in range(10):
            async with self._r.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(doc_key, trail_key)
                    raw = await pipe.get(doc_key)
                    trail = await pipe.lrange(trail_key, 0, -1)
                    ttl = await pipe.ttl(trail_key)
                    if raw is None:
                        return
                    original = orjson.loads(raw)
                    doc = _anonymous(original, ref)
                    entries = [{**orjson.loads(t), "note": ERASED_NOTE} for t in trail]
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.set(doc_key, orjson.dumps(doc), keepttl=True)
                    # The inbox's customer index follows (same slot as the alert).
                    pipe.zrem(self.desk.index("cu", str(original.get("customer_id"))), alert_id)
                    pipe.zadd(self.desk.index("cu", ref), {alert_id: int(original.get("created") or 0)})
                    pipe.expire(self.desk.index("cu", ref), self.s.alert_retention_s)
                    if entries:
                        pipe.delete(trail_key)
                        pipe.rpush(trail_key, *[orjson.dumps(e) for e in entries])
                        if ttl and ttl > 0:
                            pipe.expire(trail_key, ttl)
                    await pipe.execute()
                    return
                except WatchError:
                    continue
        raise StoreError(f"erasure: alert {alert_id} kept changing; run the erasure again")


def _anonymous(doc: dict[str, Any], ref: str) -> dict[str, Any]:
    """An alert without its customer: the reference, no context, only the events' ids."""
    events = [{"event_id": e.get("event_id"), "channel": e.get("channel")} for e in doc.get("events") or []]
    return {**doc, "customer_id": ref, "context": {"erased": True}, "events": events}


def _customer_of(raw: bytes | str) -> str | None:
    value = orjson.loads(raw).get("customer_id")
    return value if isinstance(value, str) else None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _escape(pattern: str) -> str:
    """A key as a literal SCAN pattern: the hash tag's braces and any glob characters."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in pattern)
