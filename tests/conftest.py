"""Session fixtures: one embedded Redis and one embedded broker for the whole run,
on free ports (unless BEACON_REDIS_URL / BEACON_KAFKA_BOOTSTRAP point elsewhere), and an
embedded Redis Cluster, started only when a test asks for ``redis_cluster``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.ops.infra import start_embedded, start_redis_cluster, wait_kafka
from engine.settings import Settings


@pytest.fixture(scope="session")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The single Redis and the broker (``infra`` is this unless a module overrides it)."""
    base = Settings.build()
    logs = tmp_path_factory.mktemp("infra-logs")
    emb = start_embedded(base, log_dir=str(logs))
    try:
        settings = emb.settings_for(base)
        wait_kafka(settings)
        yield settings
    finally:
        emb.stop()


@pytest.fixture(scope="session")
def infra(embedded: Settings) -> Settings:
    return embedded


@pytest.fixture(scope="session")
def redis_cluster(embedded: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The ``infra`` settings (its broker) with Redis an embedded cluster of three masters and
    three replicas; ``redis_url`` names one node. It depends on ``embedded``, not ``infra``,
    so a module can run single-Redis tests on the cluster by overriding ``infra`` with it
    (tests/integration/test_cluster_stores.py). Tests must not kill its nodes: a failover
    test starts a cluster of its own (tests/clusterkit.py)."""
    work = tmp_path_factory.mktemp("redis-cluster")
    cluster = start_redis_cluster(work / "data", work)
    try:
        yield embedded.replace(redis_url=cluster.url, redis_cluster=True)
    finally:
        cluster.stop()


@pytest.fixture
def logdir(tmp_path: Path) -> Path:
    return tmp_path
