"""Redis adapter for customer state: one script call per batch in, one per batch out.

Every key of a customer carries the hash tag ``{customer_id}``, so each script call
touches one slot per customer and the layout works on Redis Cluster too.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from typing import Any

import orjson
import redis.asyncio as aioredis

from engine.domain.events import Event
from engine.domain.state import (
    CONTACT_WINDOW_S,
    MARKED,
    WINDOWS,
    Snapshot,
    lua_payload,
    snapshot_from_reply,
    window_tallies,
)
from engine.settings import Settings
from engine.store.redisio import redis_errors, text

_PIN_BOUND = 50
_DEVICE_CUSTOMERS_BOUND = 100


def _lua(name: str) -> str:
    return resources.files("engine.store").joinpath("lua", name).read_text()


class StateStore:
    def __init__(self, client: aioredis.Redis, settings: Settings) -> None:
        self._redis = client
        self._prefix = settings.key_prefix
        self._ingest = client.register_script(_lua("ingest.lua"))
        self._commit = client.register_script(_lua("commit.lua"))
        self._config = orjson.dumps(
            {
                "windows": [[w.name, w.bucket_s, w.buckets] for w in WINDOWS],
                "channels": list(settings.channels),
                "state_ttl": settings.state_ttl_s,
                "dedupe_ttl": settings.dedupe_ttl_s,
                "profile_ttl": settings.profile_ttl_s,
                "known_devices": settings.known_devices,
                "recent_events": settings.recent_events,
                "recent_decisions": settings.recent_decisions,
                "recent_pins": _PIN_BOUND,
                "contact_window": CONTACT_WINDOW_S,
                "contact_history": settings.contact_history,
                "open_alerts": settings.open_alerts,
                "marked": list(MARKED),
                "key_prefix": settings.key_prefix,
                "device_customers": _DEVICE_CUSTOMERS_BOUND,
            }
        )

    def key(self, customer_id: str) -> str:
        return f"{self._prefix}:{{{customer_id}}}"

    async def ingest(self, events: Sequence[Event]) -> list[Snapshot]:
        """Dedupe, update and read state for a batch of events in one round trip."""
        keys = [self.key(e.customer_id) for e in events]
        args = [self._config, *(lua_payload(e) for e in events)]
        with redis_errors("state ingest"):
            raw = await self._ingest(keys=keys, args=args)
        return [
            snapshot_from_reply(r, e.channel, e.type) for r, e in zip(orjson.loads(raw), events, strict=True)
        ]

    async def commit(self, customer_ids: Sequence[str], payloads: Sequence[bytes]) -> list[dict[str, Any]]:
        """Apply caps and suppression, count impressions, store the decisions: one round trip."""
        if not payloads:
            return []
        keys = [self.key(c) for c in customer_ids]
        with redis_errors("decision commit"):
            raw = await self._commit(keys=keys, args=[self._config, *payloads])
        replies: list[dict[str, Any]] = orjson.loads(raw)
        return replies

    async def put_profile(self, customer_id: str, profile: dict[str, Any], ttl_s: int) -> None:
        with redis_errors("profile write"):
            await self._redis.set(self.key(customer_id) + ":profile", orjson.dumps(profile), ex=ttl_s)

    async def put_profiles(self, profiles: Sequence[tuple[str, dict[str, Any]]], ttl_s: int) -> None:
        with redis_errors("profile import"):
            async with self._redis.pipeline(transaction=False) as pipe:
                for customer_id, profile in profiles:
                    pipe.set(self.key(customer_id) + ":profile", orjson.dumps(profile), ex=ttl_s)
                await pipe.execute()

    async def customer_view(self, customer_id: str) -> dict[str, Any]:
        """The unified view: profile, rolling state, recent interactions, decisions, alerts."""
        k = self.key(customer_id)
        with redis_errors("customer read"):
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.get(k + ":profile")
                pipe.hgetall(k + ":last")
                pipe.zrange(k + ":dev", 0, -1, withscores=True)
                pipe.lrange(k + ":ev", 0, -1)
                pipe.lrange(k + ":decisions", 0, -1)
                pipe.hvals(k + ":alerts")
                pipe.zcard(k + ":pin")
                pipe.hgetall(k + ":wt")
                res = await pipe.execute()
        profile, last, devices, recent, decisions, alerts, pins, totals = res
        windows = window_tallies((text(a), text(b)) for a, b in totals.items())
        return {
            "customer_id": customer_id,
            "profile": orjson.loads(profile) if profile else None,
            "last_seen": {text(a): text(b) for a, b in last.items()},
            "devices": [{"device_id": text(d), "last_seen": ts} for d, ts in devices],
            "recent_pin_failures": pins,
            "windows": {
                w.name: {
                    dim: {"count": t.count, "amount": t.amount} for dim, t in windows.get(w.name, {}).items()
                }
                for w in WINDOWS
            },
            "recent_interactions": [orjson.loads(x) for x in recent],
            "recent_decisions": [orjson.loads(x) for x in decisions],
            "open_alerts": sorted((orjson.loads(a) for a in alerts), key=lambda a: a["alert_id"]),
        }

    async def ping(self) -> None:
        with redis_errors("Redis ping"):
            await self._redis.ping()
