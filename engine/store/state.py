"""Redis adapter for customer state: one script call per batch in, one per batch out.

Events go in and snapshots come out (ingest); decisions go in and come out as committed,
with the exact body the channel gets (commit). The scripts' wire forms are
``engine.store.codec``; the keys (one slot per customer) are ``engine.store.keys``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

import orjson
import redis.asyncio as aioredis

from engine.domain.decision import Decision
from engine.domain.events import Event
from engine.domain.state import Snapshot
from engine.errors import StoreError
from engine.rules.ruleset import Offer
from engine.settings import Settings
from engine.store import codec, keys, readonly, views
from engine.store.clustersplit import ClusterSplit, Scripts
from engine.store.layout import KeyLayout
from engine.store.redisio import redis_errors
from engine.store.scriptline import ScriptLine


def _lua(name: str) -> str:
    return resources.files("engine.store").joinpath("lua", name).read_text()


class StateStore:
    """The Redis implementation of :class:`engine.store.base.CustomerState`."""

    def __init__(self, client: aioredis.Redis, settings: Settings) -> None:
        self._redis = client
        # One Redis: the batch's one call on a connection of its own (scriptline.py).
        self._line: ScriptLine | None = None if settings.redis_cluster else ScriptLine(client)
        self._prefix = settings.key_prefix
        self.layout = KeyLayout.of(settings.key_prefix, settings.redis_cluster, settings.redis_slot_groups)
        self._ingest = client.register_script(_lua("ingest.lua"))
        self._commit = client.register_script(_lua("commit.lua"))
        self._profile_swap = client.register_script(_lua("profile_swap.lua"))
        self._ingest_config = codec.ingest_config(settings)
        self._commit_config = codec.commit_config(settings)
        self._cluster: ClusterSplit | None = None
        if settings.redis_cluster:
            scripts = Scripts(self._ingest, self._commit, self._ingest_config)
            self._cluster = ClusterSplit(client, self.layout, settings, scripts)

    def _one_redis(self) -> ScriptLine:
        if self._line is None:
            raise StoreError("the script line is for one Redis; this store is on a cluster", "other")
        return self._line

    def key(self, customer_id: str) -> str:
        return self.layout.customer(customer_id)

    async def ingest(self, events: Sequence[Event]) -> list[Snapshot]:
        """Dedupe, update and read state for a batch of events in one round trip."""
        if self._cluster is not None:
            return await self._cluster.ingest(events)
        customer_keys = [self.key(e.customer_id) for e in events]
        args = [self._ingest_config, *(codec.ingest_payload(e) for e in events)]
        with redis_errors("state ingest"):
            raw = await self._one_redis().run(self._ingest, customer_keys, args)
        return [
            codec.snapshot_from_reply(r, e.channel, e.type, e)
            for r, e in zip(orjson.loads(raw), events, strict=True)
        ]

    async def commit(
        self, decisions: Sequence[Decision], offers: Mapping[str, Offer], timings_ms: dict[str, float]
    ) -> list[tuple[Decision | None, bytes]]:
        """Apply caps and suppression, count impressions, store the decisions and write
        their outgoing records to the outbox: one round trip.

        Returns each decision as committed (actions shown, alerts raised, caps explained)
        with the exact body the channel gets, which a repeat of its event gets too; None
        instead of the decision if it was committed before (a resent call)."""
        if not decisions:
            return []
        if self._cluster is not None:
            return await self._cluster.commit(decisions, offers, timings_ms)
        customer_keys = [self.key(d.event.customer_id) for d in decisions]
        payloads = [codec.commit_payload(d, offers, timings_ms) for d in decisions]
        with redis_errors("decision commit"):
            raw = await self._one_redis().run(self._commit, customer_keys, [self._commit_config, *payloads])
        replies: list[dict[str, Any]] = orjson.loads(raw)
        return [codec.apply_commit(d, r) for d, r in zip(decisions, replies, strict=True)]

    async def put_profile(self, customer_id: str, profile: dict[str, Any], ttl_s: int) -> None:
        with redis_errors("profile write"):
            await self._redis.set(self.key(customer_id) + keys.PROFILE, orjson.dumps(profile), ex=ttl_s)

    async def read_profile(self, customer_id: str) -> bytes | None:
        with redis_errors("profile read"):
            raw = await self._redis.get(self.key(customer_id) + keys.PROFILE)
        return raw.encode() if isinstance(raw, str) else raw

    async def swap_profile(
        self, customer_id: str, expected: bytes | None, profile: bytes, entry: bytes, ttl_s: int, keep: int
    ) -> bool:
        """Write ``profile`` and its history ``entry`` if the stored profile is still
        ``expected`` (compare-and-set: engine/store/lua/profile_swap.lua)."""
        k = self.key(customer_id)
        with redis_errors("profile write"):
            done = await self._profile_swap(
                keys=[k + keys.PROFILE, k + keys.PROFILE_HISTORY],
                args=[expected or b"", profile, entry, ttl_s, keep],
            )
        return bool(done)

    async def profile_history(self, customer_id: str, limit: int) -> list[dict[str, Any]]:
        with redis_errors("profile history read"):
            raw = await self._redis.lrange(self.key(customer_id) + keys.PROFILE_HISTORY, 0, limit - 1)
        return [orjson.loads(r) for r in raw]

    async def put_profiles(self, profiles: Sequence[tuple[str, dict[str, Any]]], ttl_s: int) -> None:
        with redis_errors("profile import"):
            async with self._redis.pipeline(transaction=False) as pipe:
                for customer_id, profile in profiles:
                    pipe.set(self.key(customer_id) + keys.PROFILE, orjson.dumps(profile), ex=ttl_s)
                await pipe.execute()

    async def customer_view(self, customer_id: str) -> dict[str, Any]:
        """The unified view: profile, rolling state, recent interactions, decisions, alerts."""
        k = self.key(customer_id)
        with redis_errors("customer read"):
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.get(k + keys.PROFILE)
                pipe.hgetall(k + keys.LAST)
                pipe.zrange(k + keys.DEVICES, 0, -1, withscores=True)
                pipe.lrange(k + keys.EVENTS, 0, -1)
                pipe.lrange(k + keys.DECISIONS, 0, -1)
                pipe.hvals(k + keys.ALERTS)
                pipe.zcard(k + keys.PINS)
                pipe.hgetall(k + keys.WINDOW_TOTALS)
                replies = await pipe.execute()
        return views.customer_view(customer_id, replies)

    async def ping(self) -> None:
        with redis_errors("Redis ping"):
            await self._redis.ping()

    async def peek(
        self, customer_id: str, now: float, offer_ids: Sequence[str]
    ) -> tuple[Snapshot, readonly.Contacts] | None:
        """The customer's state and contact history at ``now``, read only: no window
        updated, no impression counted, no TTL refreshed (outbound scoring). None for a
        customer with neither a profile nor any state."""
        with redis_errors("customer read"):
            async with self._redis.pipeline(transaction=False) as pipe:
                readonly.queue_reads(pipe, self.layout, customer_id, now, offer_ids)
                replies = await pipe.execute()
        return readonly.decode(replies, offer_ids, now)
