"""Per-node Redis metrics (issue 16): every node a worker's client knows, probed on its own."""

from __future__ import annotations

import pytest

from engine.service.metrics import Metrics, record_nodes
from engine.settings import Settings
from engine.store.nodes import probe
from engine.store.redisio import connect

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("deployment", ["single", "cluster"])
async def test_every_node_reports_role_memory_and_round_trip(
    deployment: str, infra: Settings, request: pytest.FixtureRequest
) -> None:
    settings = infra if deployment == "single" else request.getfixturevalue("redis_cluster")
    client = connect(settings)
    try:
        await client.ping()
        reports = await probe(client)
    finally:
        await client.aclose()
    roles = sorted(r.role for r in reports)
    assert roles == (["primary"] if deployment == "single" else ["primary"] * 3 + ["replica"] * 3)
    assert all(r.up and r.used_memory_bytes > 0 and r.info_seconds > 0 for r in reports)
    metrics = Metrics()
    record_nodes(metrics, reports)
    for r in reports:
        assert (
            metrics.registry.get_sample_value("beacon_redis_node_up", {"node": r.node, "role": r.role}) == 1
        )
        assert metrics.registry.get_sample_value("beacon_redis_node_used_memory_bytes", {"node": r.node}) > 0


async def test_a_node_that_does_not_answer_is_down_not_an_error(infra: Settings) -> None:
    client = connect(infra.replace(redis_url="redis://127.0.0.1:1/0", store_timeout_s=0.2))
    try:
        [report] = await probe(client)
    finally:
        await client.aclose()
    assert (report.node, report.role, report.up) == ("127.0.0.1:1", "unknown", False)
    metrics = Metrics()
    record_nodes(metrics, [report])
    assert (
        metrics.registry.get_sample_value("beacon_redis_node_up", {"node": "127.0.0.1:1", "role": "unknown"})
        == 0
    )
