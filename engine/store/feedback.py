"""Redis adapter of the trainer: decision-time inputs, pending labels, label dedupe.

Keys (``P`` is the key prefix; the trainer is their only writer)::

    P:fb:x:<decision_id>       inputs the decision used (learner.inputs_of)   TTL feedback_ttl_s
    P:fb:last:<customer_id>    the customer's latest decision id and time     TTL feedback_ttl_s
    P:fb:pending:offer         zset "<decision>|<action>" -> answer deadline  swept when due
    P:fb:pending:fraud         zset decision -> maturity (then legitimate)    swept when due
    P:fb:pending:churn         zset customer -> dormancy due (then churned)   swept when due
    P:fb:ignored:<d>|<action>  counted as ignored (a late accept corrects)    TTL feedback_ttl_s
    P:fb:seen:<digest>         labels already learned (redelivery is a no-op) TTL feedback_ttl_s
    P:fb:orphans               labels whose decision is not known yet         bound 10,000
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from engine.errors import StoreError
from engine.store.redisio import guarded

_ORPHANS_BOUND = 10_000


class FeedbackStore:
    def __init__(self, client: aioredis.Redis, prefix: str, ttl_s: int) -> None:
        self._r = client
        self._p = f"{prefix}:fb"
        self._ttl = ttl_s

    async def remember(
        self,
        decision_id: str,
        inputs: Mapping[str, Any],
        offer_deadline: float | None,
        fraud_maturity: float | None,
        churn_due: float = float("inf"),
        churn_labelled: float = 0.0,
    ) -> None:
        try:
            async with self._r.pipeline(transaction=True) as pipe:
                pipe.set(f"{self._p}:x:{decision_id}", orjson.dumps(inputs), ex=self._ttl)
                pipe.set(
                    f"{self._p}:last:{inputs['customer_id']}",
                    orjson.dumps({"d": decision_id, "ts": inputs["ts"], "lab": churn_labelled}),
                    ex=self._ttl,
                )
                # Dormancy watch: if this stays the customer's latest decision past the
                # horizon, the customer went dormant (a churn positive).
                pipe.zadd(f"{self._p}:pending:churn", {str(inputs["customer_id"]): churn_due})
                if offer_deadline is not None:
                    pipe.zadd(
                        f"{self._p}:pending:offer",
                        {f"{decision_id}|{a}": offer_deadline for a in inputs["shown"]},
                    )
                if fraud_maturity is not None:
                    pipe.zadd(f"{self._p}:pending:fraud", {decision_id: fraud_maturity})
                await pipe.execute()
        except RedisError as exc:
            raise StoreError(f"feedback store: {exc}") from exc

    async def recall(self, decision_id: str) -> dict[str, Any] | None:
        raw = await self._call(self._r.get(f"{self._p}:x:{decision_id}"))
        return orjson.loads(raw) if raw else None

    async def last_of(self, customer_id: str) -> dict[str, Any] | None:
        raw = await self._call(self._r.get(f"{self._p}:last:{customer_id}"))
        return orjson.loads(raw) if raw else None

    async def first_time(self, label: Mapping[str, Any]) -> bool:
        """True once per distinct label (Kafka redelivers; a label is learned once)."""
        digest = hashlib.blake2s(orjson.dumps(label, option=orjson.OPT_SORT_KEYS), digest_size=12).hexdigest()
        return bool(await self._call(self._r.set(f"{self._p}:seen:{digest}", 1, nx=True, ex=self._ttl)))

    async def resolve_offer(self, decision_id: str, action: str) -> str:
        """'pending' (answered in time), 'ignored' (already counted as ignored: a late
        answer corrects it), or 'unknown' (not shown, or expired)."""
        member = f"{decision_id}|{action}"
        removed = await self._call(self._r.zrem(f"{self._p}:pending:offer", member))
        if removed:
            return "pending"
        if await self._call(self._r.delete(f"{self._p}:ignored:{member}")):
            return "ignored"
        return "unknown"

    async def resolve_churn(self, customer_id: str) -> None:
        await self._call(self._r.zrem(f"{self._p}:pending:churn", customer_id))

    async def resolve_fraud(self, decision_id: str) -> None:
        await self._call(self._r.zrem(f"{self._p}:pending:fraud", decision_id))

    async def due(self, kind: str, now: float, limit: int = 500) -> list[str]:
        """Pending items past their time, removed from the pending set (one trainer)."""
        key = f"{self._p}:pending:{kind}"
        members = await self._call(self._r.zrangebyscore(key, "-inf", now, start=0, num=limit))
        if members:
            await self._call(self._r.zrem(key, *members))
            if kind == "offer":
                async with self._r.pipeline(transaction=False) as pipe:
                    for m in members:
                        pipe.set(f"{self._p}:ignored:{m.decode()}", 1, ex=self._ttl)
                    await pipe.execute()
        return [m.decode() for m in members]

    async def park(self, label: Mapping[str, Any], parked_at: float) -> None:
        """Keep a label whose decision is not known yet (the audit and feedback topics race);
        the trainer retries it at every sweep until it has waited long enough."""
        key = f"{self._p}:orphans"
        await self._call(self._r.zadd(key, {orjson.dumps({**label, "_parked": parked_at}): parked_at}))
        await self._call(self._r.zremrangebyrank(key, 0, -(_ORPHANS_BOUND + 1)))

    async def waiting(self) -> int:
        """How many labels are parked."""
        return int(await self._call(self._r.zcard(f"{self._p}:orphans")))

    async def orphans(self, limit: int = 500) -> list[dict[str, Any]]:
        """Parked labels, oldest first, taken out (the trainer parks again what still waits)."""
        key = f"{self._p}:orphans"
        raw = await self._call(self._r.zrange(key, 0, limit - 1))
        if raw:
            await self._call(self._r.zrem(key, *raw))
        return [orjson.loads(r) for r in raw]

    async def save_quality(self, summaries: Mapping[str, Any]) -> None:
        """The trainer's progressive metrics, for ``beacon models report``."""
        if summaries:
            await self._call(
                self._r.hset(f"{self._p}:quality", mapping={k: orjson.dumps(v) for k, v in summaries.items()})
            )

    async def load_quality(self) -> dict[str, Any]:
        raw = await self._call(self._r.hgetall(f"{self._p}:quality"))
        return {k.decode(): orjson.loads(v) for k, v in raw.items()}

    async def _call(self, awaitable: Any) -> Any:
        return await guarded("feedback store", awaitable)
