"""Many workers (issue 16): three workers on a 12-partition topic under steady open-loop
traffic; a fourth joins mid-stream, later one of the first three stops (SIGTERM, and in
a second run SIGKILL), traffic flowing throughout. Every event is decided, each decision
repeated on the topic (at-least-once) carries the same decision id, and each customer's
state counts every event exactly once, in the order sent: rolling counts and amounts,
recent interactions and decisions, one dedupe key per event.

The latency of each phase (before the join, the rebalances, after) is printed, not
asserted: the machine is shared. ``python -m loadtest.rebalance`` runs the same scenario
(loadtest/rebalance.py) and prints the same table.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.settings import Settings
from loadtest.rebalance import Plan, report, run, state_mismatches
from tests.helpers import isolated

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("stop", ["term", "kill"])
async def test_a_worker_joins_and_one_leaves_mid_stream_and_state_counts_each_event_once(
    infra: Settings, logdir: Path, stop: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = isolated(infra, partitions=12)
    out = await run(settings, logdir, Plan(rate=150.0, stop=stop))
    mismatches = await state_mismatches(settings, out)
    with capsys.disabled():
        print(f"\n\nRebalance with many workers ({stop}):\n" + report(out, mismatches))

    joiner_log = out.logs[-1].read_text(errors="replace")[-3000:]
    assert out.stop_code == (-9 if stop == "kill" else 0), out.logs[0].read_text(errors="replace")[-3000:]
    assert out.marks["stop"] > out.marks["joined"] and len(out.events) > 0.9 * 150 * 30
    # Traffic ran through both rebalances: events were sent in every phase.
    assert [ph.name for ph in out.phases if not any(ph.start <= t < ph.end for t in out.sent.values())] == []
    missing = out.missing()
    assert not missing, (len(missing), sorted(missing)[:5], joiner_log)
    # At-least-once on the topic: a repeat is the same decision, never a second one. Even
    # a graceful rebalance repeats some: faust-streaming does not commit the offsets it
    # processed when partitions are revoked (the "repeats on topic" column).
    assert all(len(ids) == 1 for ids in out.decision_ids().values())
    # A "recent_decisions" mismatch alone (counts, interactions and dedupe keys right)
    # means one customer's decisions were committed out of order. Seen once, on a machine
    # at load average 10, where Redis round trips timed out (store_timeout_s): the Kafka
    # path retries such an event on its own while the stream's later batches go on
    # (agents/kafka_path.py, KafkaPath._outcome). See BENCHMARKS.md.
    assert mismatches == [], mismatches[:10]
