"""Decisions on a real Redis Cluster (issue 16): three masters, three replicas, customers
spread over the slot groups of engine/store/layout.py.

The single-Redis tests of the decision path, collected here a second time: this module's
``infra`` is the cluster, so their fixtures build cluster clients and the state store
splits each batch by slot group. Kept: the 10,000 events end to end through Kafka and a
worker, with the replay that must change nothing; idempotency (repeats, the same event
twice in a batch, a conflict, facts surviving a crash); contact caps, the global daily
cap across concurrent workers, alert suppression; and the outbox (a resent commit, a lost
reply, a claim, the audit records). Left out: the tests of the one-Redis script line and
of the scripts' history (test_script_equivalence), which have no cluster form.
"""

from __future__ import annotations

import pytest

from engine.ops.rediscluster import key_slot
from engine.settings import Settings
from engine.store.layout import KeyLayout
from engine.store.redisio import connect
from tests.integration.test_commit import (  # noqa: F401 - collected again, on the cluster
    service,
    settings,
    test_a_repeat_gets_the_same_bytes_and_counts_nothing,
    test_alert_is_suppressed_within_its_window_but_the_verdict_stands,
    test_decline_starts_a_cool_down,
    test_global_daily_cap_holds_across_concurrent_workers,
    test_overall_cap_counts_every_offer_shown,
    test_per_offer_cap_then_fallback_and_the_reason_is_explained,
)
from tests.integration.test_kafka_e2e import (  # noqa: F401
    test_ten_thousand_events_exactly_once_with_matching_state,
)
from tests.integration.test_outbox import (  # noqa: F401
    redis,
    test_a_lost_commit_reply_still_delivers_the_alert_and_the_audit_record,
    test_a_resent_commit_keeps_the_alert_and_counts_nothing_twice,
    test_an_entry_another_relay_read_and_never_delivered_is_claimed,
    test_consumers_of_workers_gone_are_forgotten,
    test_the_audit_record_the_commit_writes_is_the_one_python_builds,
)
from tests.integration.test_store import (  # noqa: F401
    test_a_late_event_counts_only_where_it_fits,
    test_a_repeat_with_another_payload_is_a_conflict_and_changes_nothing,
    test_first_delivery_facts_survive_a_crash_before_record,
    test_repeat_changes_nothing_and_gets_the_same_decision,
    test_same_event_twice_in_one_batch_is_decided_once,
    test_state_is_bounded_and_every_key_expires,
    test_two_customers_with_the_same_event_id_each_get_their_own_decision,
    test_windows_slide_with_event_time,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def infra(redis_cluster: Settings) -> Settings:
    return redis_cluster


async def test_customers_are_spread_over_every_master(infra: Settings) -> None:
    """The slot groups' tags lie evenly over the slots, so the masters' even ranges get
    even shares (64 groups over three masters: 21, 22 and 21), customers and outbox
    streams with them."""
    client = connect(infra)
    try:
        ranges = [(int(lo), int(hi)) for lo, hi, *_ in await client.execute_command("CLUSTER SLOTS")]
    finally:
        await client.aclose()
    layout = KeyLayout.of("beacon", cluster=True, groups=infra.redis_slot_groups)
    slots = [key_slot(layout.group_key(g).encode()) for g in range(len(layout.tags))]
    shares = sorted(sum(lo <= s <= hi for s in slots) for lo, hi in ranges)
    assert len(ranges) == 3 and shares == [21, 21, 22], (ranges, shares)
