"""The Redis connection every adapter shares, and where Redis errors become
:class:`StoreError` (one place)."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Iterator
from typing import Any, TypeVar, cast
from urllib.parse import urlparse

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import (
    AuthenticationError,
    NoPermissionError,
    RedisClusterException,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from engine.errors import StoreError
from engine.settings import Settings

T = TypeVar("T")


@contextlib.contextmanager
def redis_errors(what: str) -> Iterator[None]:
    """``with redis_errors("rules publish"):`` -> StoreError("rules publish failed: ...")."""
    try:
        yield
    except AttributeError as exc:
        if not _client_race(exc):
            raise
        raise StoreError(f"{what} failed: connection dropped under the client ({exc})", "connection") from exc
    except (RedisError, RedisClusterException) as exc:
        kind = kind_of(exc)
        hint = {"cross_slot": _CROSS_SLOT_HINT, "permission": _NOPERM_HINT}.get(kind, "")
        raise StoreError(f"{what} failed: {exc}{hint}", kind) from exc


def _client_race(exc: AttributeError) -> bool:
    """redis-py 8.1's cluster client, when a node fails, drops connections other tasks are
    still writing on: they fail with this AttributeError, not a RedisError (seen up to ~1 s
    after a failover; tests/clusterkit.py CLIENT_RACE). It is a lost connection."""
    return "'NoneType' object has no attribute" in str(exc) and any(
        name in str(exc) for name in ("'writelines'", "'write'", "'read'", "'readline'")
    )


_CROSS_SLOT_HINT = (
    " (Redis Cluster: one command's keys must share one slot; each layout in engine/store/keys.py"
    " and engine/store/layout.py says why its keys do)"
)


_NOPERM_HINT = (
    " (Redis ACL, NOPERM: this process's user (redis_username) may not run that command or touch that"
    " key; see config/redis/users.acl and engine/ops/redisacl.py)"
)


def kind_of(exc: RedisError | RedisClusterException) -> str:
    """What an SRE tells apart: Redis gone, Redis slow, Redis saying no (OOM, scripts), or
    a command whose keys are in more than one slot of a Redis Cluster (a defect: every
    layout in engine/store/keys.py keeps what one command touches in one slot)."""
    if "same key slot" in str(exc) or "same slot" in str(exc) or "CROSSSLOT" in str(exc):
        return "cross_slot"
    if isinstance(exc, NoPermissionError) or str(exc).startswith("NOPERM"):
        return "permission"
    if isinstance(exc, AuthenticationError) or "WRONGPASS" in str(exc):
        return "auth"
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
    """The client for ``settings.redis_url``: a single Redis, or with ``redis_cluster`` a
    Redis Cluster, named by one or more of its nodes (the client learns the others and
    follows MOVED and failover).

    Typed as the single-node client: the cluster client speaks the same commands, and
    what differs (script calls split by slot, pub/sub) is handled where it is used."""
    if settings.redis_cluster:
        first, others = cluster_nodes(settings.redis_url)
        return cast(
            aioredis.Redis,
            RedisCluster.from_url(
                first,
                startup_nodes=[ClusterNode(host, port) for host, port in others],
                socket_timeout=settings.store_timeout_s,
                socket_connect_timeout=settings.store_timeout_s,
                **credentials(settings),
            ),
        )
    return aioredis.Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.store_timeout_s,
        socket_connect_timeout=settings.store_timeout_s,
        health_check_interval=30,
        **credentials(settings),
    )


def credentials(settings: Settings) -> dict[str, Any]:
    """The ACL user of this process (config/redis/users.acl), over the URL's own, if set."""
    if not settings.redis_username:
        return {}
    return {"username": settings.redis_username, "password": settings.redis_password}


def cluster_nodes(url: str) -> tuple[str, list[tuple[str, int]]]:
    """A cluster's ``redis_url``: the first node's URL (its credentials and TLS scheme are
    the cluster's) and the other nodes' addresses. Naming several means that the client
    can start, and learn the slots again after a failover, while any one of them is down.

    >>> cluster_nodes("redis://:pw@r1:6379/0, r2:6380,rediss://r3")
    ('redis://:pw@r1:6379/0', [('r2', 6380), ('r3', 6379)])
    """
    first, *others = [part.strip() for part in url.split(",") if part.strip()] or [""]
    nodes = []
    for other in others:
        parsed = urlparse(other if "://" in other else f"redis://{other}")
        nodes.append((parsed.hostname or "", parsed.port or 6379))
    return first, nodes
