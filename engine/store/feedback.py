"""Redis adapter of the trainer: decision-time inputs, pending labels, label dedupe.

Keys: :class:`engine.store.keys.FeedbackKeys` (the trainer is their only writer).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from engine.errors import StoreError
from engine.store.keys import FeedbackKeys
from engine.store.redisio import guarded

_ORPHANS_BOUND = 10_000


class FeedbackStore:
    def __init__(self, client: aioredis.Redis, prefix: str, ttl_s: int) -> None:
        self._r = client
        self.keys = FeedbackKeys.of(prefix)
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
                pipe.set(self.keys.inputs(decision_id), orjson.dumps(inputs), ex=self._ttl)
                pipe.set(
                    self.keys.last(inputs["customer_id"]),
                    orjson.dumps({"d": decision_id, "ts": inputs["ts"], "lab": churn_labelled}),
                    ex=self._ttl,
                )
                # Dormancy watch: if this stays the customer's latest decision past the
                # horizon, the customer went dormant (a churn positive).
                pipe.zadd(self.keys.pending("churn"), {str(inputs["customer_id"]): churn_due})
                if offer_deadline is not None:
                    pipe.zadd(
                        self.keys.pending("offer"),
                        {f"{decision_id}|{a}": offer_deadline for a in inputs["shown"]},
                    )
                if fraud_maturity is not None:
                    pipe.zadd(self.keys.pending("fraud"), {decision_id: fraud_maturity})
                await pipe.execute()
        except RedisError as exc:
            raise StoreError(f"feedback store: {exc}") from exc

    async def recall(self, decision_id: str) -> dict[str, Any] | None:
        raw = await self._call(self._r.get(self.keys.inputs(decision_id)))
        return orjson.loads(raw) if raw else None

    async def last_of(self, customer_id: str) -> dict[str, Any] | None:
        raw = await self._call(self._r.get(self.keys.last(customer_id)))
        return orjson.loads(raw) if raw else None

    async def first_time(self, label: Mapping[str, Any]) -> bool:
        """True once per distinct label (Kafka redelivers; a label is learned once)."""
        digest = hashlib.blake2s(orjson.dumps(label, option=orjson.OPT_SORT_KEYS), digest_size=12).hexdigest()
        return bool(await self._call(self._r.set(self.keys.seen(digest), 1, nx=True, ex=self._ttl)))

    async def resolve_offer(self, decision_id: str, action: str) -> str:
        """'pending' (answered in time), 'ignored' (already counted as ignored: a late
        answer corrects it), or 'unknown' (not shown, or expired)."""
        member = f"{decision_id}|{action}"
        removed = await self._call(self._r.zrem(self.keys.pending("offer"), member))
        if removed:
            return "pending"
        if await self._call(self._r.delete(self.keys.ignored(member))):
            return "ignored"
        return "unknown"

    async def resolve_churn(self, customer_id: str) -> None:
        await self._call(self._r.zrem(self.keys.pending("churn"), customer_id))

    async def resolve_fraud(self, decision_id: str, fraud: bool) -> str:
        """Record that the transaction is now learned as ``fraud`` (or legitimate); returns
        how it stood: 'pending' (not learned yet), 'fraud' or 'legitimate' (a report or a
        confirmation was learned), or 'settled': no longer pending and no verdict, which for
        a monetary transaction means it matured as legitimate (the sweep is the only other
        way out of the pending set), and for other events that it never was pending.

        So the store remembers which transactions matured as negatives without a key per
        transaction: only reported ones get one (``FeedbackKeys.fraud``)."""
        try:
            async with self._r.pipeline(transaction=True) as pipe:
                pipe.zrem(self.keys.pending("fraud"), decision_id)
                pipe.set(self.keys.fraud(decision_id), int(fraud), ex=self._ttl, get=True)
                removed, before = await pipe.execute()
        except RedisError as exc:
            raise StoreError(f"feedback store: {exc}") from exc
        if before is not None:
            return "fraud" if before == b"1" else "legitimate"
        return "pending" if removed else "settled"

    async def due(self, kind: str, now: float, limit: int = 500) -> list[str]:
        """Pending items past their time, removed from the pending set (one trainer); an
        offer is marked ignored, so a late answer corrects it (a transaction needs no mark:
        see :meth:`resolve_fraud`)."""
        key = self.keys.pending(kind)
        members = await self._call(self._r.zrangebyscore(key, "-inf", now, start=0, num=limit))
        if members:
            await self._call(self._r.zrem(key, *members))
            if kind == "offer":
                async with self._r.pipeline(transaction=False) as pipe:
                    for m in members:
                        pipe.set(self.keys.ignored(m.decode()), 1, ex=self._ttl)
                    await pipe.execute()
        return [m.decode() for m in members]

    async def park(self, label: Mapping[str, Any], parked_at: float) -> None:
        """Keep a label whose decision is not known yet (the audit and feedback topics race);
        the trainer retries it at every sweep until it has waited long enough."""
        key = self.keys.orphans
        await self._call(self._r.zadd(key, {orjson.dumps({**label, "_parked": parked_at}): parked_at}))
        await self._call(self._r.zremrangebyrank(key, 0, -(_ORPHANS_BOUND + 1)))

    async def waiting(self) -> int:
        """How many labels are parked."""
        return int(await self._call(self._r.zcard(self.keys.orphans)))

    async def orphans(self, limit: int = 500) -> list[dict[str, Any]]:
        """Parked labels, oldest first, taken out (the trainer parks again what still waits)."""
        key = self.keys.orphans
        raw = await self._call(self._r.zrange(key, 0, limit - 1))
        if raw:
            await self._call(self._r.zrem(key, *raw))
        return [orjson.loads(r) for r in raw]

    async def save_quality(self, summaries: Mapping[str, Any]) -> None:
        """The trainer's progressive metrics, for ``beacon models report``."""
        if summaries:
            await self._call(
                self._r.hset(self.keys.quality, mapping={k: orjson.dumps(v) for k, v in summaries.items()})
            )

    async def load_quality(self) -> dict[str, Any]:
        raw = await self._call(self._r.hgetall(self.keys.quality))
        return {k.decode(): orjson.loads(v) for k, v in raw.items()}

    async def _call(self, awaitable: Any) -> Any:
        return await guarded("feedback store", awaitable)
