"""The Redis connection every adapter shares, and where Redis errors become
:class:`StoreError` (one place)."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Iterator
from typing import Any, TypeVar, cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from engine.errors import StoreError
from engine.settings import Settings

T = TypeVar("T")


@contextlib.contextmanager
def redis_errors(what: str) -> Iterator[None]:
    """``with redis_errors("rules publish"):`` -> StoreError("rules publish failed: ...")."""
    try:
        yield
    except (RedisError, RedisClusterException) as exc:
        raise StoreError(f"{what} failed: {exc}", kind_of(exc)) from exc


def kind_of(exc: RedisError | RedisClusterException) -> str:
    """What an SRE tells apart: Redis gone, Redis slow, Redis saying no (OOM, scripts), or
    a command whose keys are in more than one slot of a Redis Cluster (a defect: every
    layout in engine/store/keys.py keeps what one command touches in one slot)."""
    if "same key slot" in str(exc) or "same slot" in str(exc) or "CROSSSLOT" in str(exc):
        return "cross_slot"
    if isinstance(exc, RedisClusterException):  # no node reachable, slots not covered
        return "connection"
    if isinstance(exc, RedisTimeoutError):
        return "timeout"
    if isinstance(exc, RedisConnectionError):
        return "connection"
    if isinstance(exc, ResponseError):
        return "response"
    return "other"


async def guarded(what: str, awaitable: Awaitable[T]) -> T:
    """One awaited Redis call, its failure converted like :func:`redis_errors`."""
    with redis_errors(what):
        return await awaitable


def text(value: Any) -> str:
    """Redis replies are bytes (decode_responses=False); names and versions are text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def connect(settings: Settings) -> aioredis.Redis:
    """The client for ``settings.redis_url``: a single Redis, or with ``redis_cluster`` any
    node of a Redis Cluster (the client learns the others and follows MOVED and failover).

    Typed as the single-node client: the cluster client speaks the same commands, and
    what differs (script calls split by slot, pub/sub) is handled where it is used."""
    if settings.redis_cluster:
        return cast(
            aioredis.Redis,
            RedisCluster.from_url(
                settings.redis_url,
                socket_timeout=settings.store_timeout_s,
                socket_connect_timeout=settings.store_timeout_s,
            ),
        )
    return aioredis.Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.store_timeout_s,
        socket_connect_timeout=settings.store_timeout_s,
        health_check_interval=30,
    )
