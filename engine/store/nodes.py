"""What each Redis node says of itself, for the SREs' per-node metrics.

One Redis is one node; a Redis Cluster is every primary and replica the client knows.
Each is asked ``INFO`` (memory, stats, replication) on its own, so one node down shows as
that node down, not as a failed probe. Node addresses are bounded by the deployment
(docs/metrics.md): they are fine as label values.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError


@dataclass(frozen=True, slots=True)
class NodeReport:
    node: str  # host:port
    role: str  # primary or replica ("unknown" when it did not answer)
    up: bool
    used_memory_bytes: int = 0
    ops_per_second: float = 0.0
    info_seconds: float = 0.0  # how long INFO took: the node's round trip as a worker sees it


async def probe(client: aioredis.Redis) -> list[NodeReport]:
    if isinstance(client, RedisCluster):
        return [await _one(client, node.name, node) for node in client.get_nodes()]
    kwargs = client.connection_pool.connection_kwargs
    return [await _one(client, f"{kwargs.get('host', '')}:{kwargs.get('port', '')}", None)]


async def _one(client: Any, name: str, node: Any) -> NodeReport:
    started = time.perf_counter()
    try:
        if node is None:
            info = await client.info()
        else:
            info = await client.info(target_nodes=node)
    except (RedisError, RedisClusterException, OSError):
        return NodeReport(name, "unknown", False)
    role = "replica" if info.get("role") in ("slave", "replica") else "primary"
    return NodeReport(
        name,
        role,
        True,
        int(info.get("used_memory", 0)),
        float(info.get("instantaneous_ops_per_sec", 0.0)),
        time.perf_counter() - started,
    )
