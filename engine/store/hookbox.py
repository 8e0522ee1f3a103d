"""The webhook outbox: alert deliveries wait in Redis until their receiver has them.

A delivery is enqueued before its first attempt. Any worker's loop (engine/http/webhooks.py)
claims the due ones: the claim moves each one's due time ``visibility_s`` ahead, so no other
worker takes it meanwhile, and counts the attempt. The claimer then settles it (deleted:
received), reschedules it (a failure, with backoff) or dead-letters it (past the horizon:
moved to the dead list, kept for an operator). A worker that stops mid-attempt loses
nothing: the delivery is claimed again once its visibility ends (at least once).

Keys, tag {P:hooks} (one slot, so each script's keys are on one node):
``P:hooks:{P:hooks}:due`` zset delivery id -> due ms (bound: deliveries not yet received);
``...:d:<id>`` hash r (receiver), b (body), f (first enqueued ms), n (attempts), no TTL,
deleted when settled or dead; ``...:dead`` list of JSON entries, newest first, capped at
``DEAD_KEPT``; ``...:seen:<id>`` (TTL ``SEEN_TTL_S``) makes enqueueing idempotent, so an
alert record the desk reads twice (a redelivery) is not delivered twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis

from engine.store.redisio import guarded

DEAD_KEPT = 10_000
SEEN_TTL_S = 7 * 86400  # a delivery id enqueued again within this is not queued twice

_ENQUEUE = """
if not redis.call('SET', KEYS[3], 1, 'NX', 'EX', tonumber(ARGV[5])) then return 0 end
redis.call('HSET', KEYS[2], 'r', ARGV[2], 'b', ARGV[3], 'f', ARGV[4], 'n', 0)
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
return 1
"""

_CLAIM = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local key = ARGV[4] .. id
  local f = redis.call('HMGET', key, 'r', 'b', 'f')
  if f[1] then
    redis.call('ZADD', KEYS[1], ARGV[2], id)
    local n = redis.call('HINCRBY', key, 'n', 1)
    table.insert(out, {id, f[1], f[2], f[3], n})
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
"""
_DEAD = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
redis.call('LPUSH', KEYS[3], ARGV[2])
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[3]) - 1)
"""
# Back from the dead list to the queue, due now, attempts from zero: only if the entry is
# still there (LREM), so two operators redelivering at once queue it once.
_REQUEUE = """
if redis.call('LREM', KEYS[3], 1, ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], 'r', ARGV[3], 'b', ARGV[4], 'f', ARGV[5], 'n', 0)
redis.call('ZADD', KEYS[1], ARGV[5], ARGV[2])
return 1
"""


@dataclass(frozen=True, slots=True)
class Delivery:
    id: str
    receiver: str
    body: bytes
    first_ms: int
    attempts: int  # counting the one just claimed


class HookBox:
    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self._r = client
        self.base = f"{prefix}:hooks:{{{prefix}:hooks}}"
        self.due_key, self.dead_key = self.base + ":due", self.base + ":dead"
        self._enqueue = client.register_script(_ENQUEUE)
        self._claim = client.register_script(_CLAIM)
        self._dead = client.register_script(_DEAD)
        self._requeue = client.register_script(_REQUEUE)

    def item(self, delivery_id: str) -> str:
        return f"{self.base}:d:{delivery_id}"

    async def enqueue(self, delivery_id: str, receiver: str, body: bytes, now_ms: int) -> bool:
        """False: this delivery id was queued before (and may be delivered already)."""
        keys = [self.due_key, self.item(delivery_id), f"{self.base}:seen:{delivery_id}"]
        args: list[str | bytes | int] = [delivery_id, receiver, body, now_ms, SEEN_TTL_S]
        return bool(await guarded("webhook enqueue", self._enqueue(keys=keys, args=args)))

    async def claim(self, now_ms: int, visibility_ms: int, limit: int) -> list[Delivery]:
        rows = await guarded(
            "webhook claim",
            self._claim(keys=[self.due_key], args=[now_ms, now_ms + visibility_ms, limit, self.base + ":d:"]),
        )
        return [Delivery(_s(i), _s(r), bytes(b), int(f), int(n)) for i, r, b, f, n in rows]

    async def settle(self, delivery_id: str) -> None:
        pipe = self._r.pipeline(transaction=True)
        pipe.zrem(self.due_key, delivery_id)
        pipe.delete(self.item(delivery_id))
        await guarded("webhook settle", pipe.execute())

    async def reschedule(self, delivery_id: str, due_ms: int) -> None:
        await guarded("webhook reschedule", self._r.zadd(self.due_key, {delivery_id: due_ms}, xx=True))

    async def dead_letter(self, delivery: Delivery, reason: str, now_ms: int) -> None:
        entry = orjson.dumps({"id": delivery.id, "receiver": delivery.receiver, "attempts": delivery.attempts,
                              "first_ms": delivery.first_ms, "dead_ms": now_ms, "reason": reason,
                              "body": orjson.loads(delivery.body)})  # fmt: skip
        keys = [self.due_key, self.item(delivery.id), self.dead_key]
        await guarded("webhook dead letter", self._dead(keys=keys, args=[delivery.id, entry, DEAD_KEPT]))

    async def pending(self) -> int:
        return int(await guarded("webhook pending", self._r.zcard(self.due_key)))

    async def dead(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = await guarded("webhook dead list", self._r.lrange(self.dead_key, 0, limit - 1))
        return [orjson.loads(row) for row in rows]

    async def redeliver(self, delivery_ids: set[str] | None, now_ms: int) -> list[str]:
        """Queue dead deliveries again (``None``: all of them), due now with a fresh horizon;
        returns the ids queued. A receiver that never took a delivery accepts its id again."""
        queued = []
        for row in await guarded("webhook dead list", self._r.lrange(self.dead_key, 0, -1)):
            entry = orjson.loads(row)
            if delivery_ids is not None and entry.get("id") not in delivery_ids:
                continue
            keys = [self.due_key, self.item(entry["id"]), self.dead_key]
            args = [row, entry["id"], entry["receiver"], orjson.dumps(entry["body"]), now_ms]
            if await guarded("webhook redeliver", self._requeue(keys=keys, args=args)):
                queued.append(entry["id"])
        return queued

    async def anonymise(self, customer_id: str, ref: str) -> int:
        """Queued and dead deliveries about ``customer_id`` carry ``ref`` instead, and only
        the minimal fields (a right to erasure: engine/store/erasure.py); returns how many."""
        changed = 0
        for raw_id in await guarded("webhook erase", self._r.zrange(self.due_key, 0, -1)):
            key = self.item(_s(raw_id))
            body = await guarded("webhook erase", self._r.hget(key, "b"))
            if body is not None and _about(orjson.loads(body), customer_id):
                await guarded(
                    "webhook erase", self._r.hset(key, "b", orjson.dumps(_without(orjson.loads(body), ref)))
                )
                changed += 1
        rows = await guarded("webhook erase", self._r.lrange(self.dead_key, 0, -1))
        for index, row in enumerate(rows):
            entry = orjson.loads(row)
            if _about(entry.get("body") or {}, customer_id):
                entry["body"] = _without(entry["body"], ref)
                await guarded(
                    "webhook erase", self._r.lset(self.dead_key, index, orjson.dumps(entry).decode())
                )
                changed += 1
        return changed


_KEPT = ("event", "alert_id", "severity", "typologies", "rule_ids", "status", "link")


def _about(body: Any, customer_id: str) -> bool:
    return isinstance(body, dict) and body.get("customer_id") == customer_id


def _without(body: dict[str, Any], ref: str) -> dict[str, Any]:
    return {**{k: body[k] for k in _KEPT if k in body}, "customer_id": ref}


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
