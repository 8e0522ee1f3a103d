"""The ingest and record scripts against a real Redis: windows, dedupe, bounds, TTLs."""

from __future__ import annotations

import struct
import time
from collections.abc import AsyncIterator

import orjson
import pytest

from engine.domain.events import Event, payload_digest
from engine.domain.scoring import BuiltinScorer
from engine.domain.state import Tally
from engine.service.decisions import DecisionService
from engine.settings import Settings
from engine.store.redisio import connect
from engine.store.state import StateStore
from tests.helpers import isolated
from tests.unit.rulefixture import fixture_rules

pytestmark = pytest.mark.integration
T0 = time.time() - 20 * 86400  # windows run on event time; start well in the past


@pytest.fixture
async def service(infra: Settings) -> AsyncIterator[DecisionService]:
    settings = isolated(infra, max_event_age_s=40 * 86400.0)
    client = connect(settings)
    yield DecisionService(settings, StateStore(client, settings), fixture_rules(), BuiltinScorer())
    await client.aclose()


def ev(i: int, ts: float, **kw: object) -> Event:
    fields: dict[str, object] = {"channel": "atm", "type": "withdrawal", "amount": 10.0}
    fields.update(kw)
    return Event(f"e{i}", str(fields.pop("customer", "c1")), ts=ts, **fields)  # type: ignore[arg-type]


async def test_windows_slide_with_event_time(service: DecisionService) -> None:
    store = service.store
    await service.decide_batch([ev(1, T0), ev(2, T0 + 30)])
    snap = (await store.ingest([ev(3, T0 + 5 * 60)]))[0]
    assert snap.tally("10m") == Tally(3, 3000)
    # 15 minutes later the first three are out of 10m but still in 1h.
    snap = (await store.ingest([ev(4, T0 + 15 * 60)]))[0]
    assert snap.tally("10m").count == 1 and snap.tally("1h").count == 4
    # Two days later only the wide windows remember.
    snap = (await store.ingest([ev(5, T0 + 2 * 86400, channel="mobile", type="login", amount=None)]))[0]
    assert snap.tally("24h") == Tally(1, 0)
    assert snap.tally("7d") == Tally(5, 4000)
    assert snap.tally("7d", "ch:mobile") == Tally(1, 0) and snap.tally("30d", "ty:login").count == 1
    # The snapshot carries what the decision needs; the customer view carries every dimension.
    view = await store.customer_view("c1")
    assert view["windows"]["30d"]["ty:withdrawal"] == {"count": 4, "amount": 40.0}
    assert view["windows"]["7d"]["all"]["count"] == 5


async def test_a_late_event_counts_only_where_it_fits(service: DecisionService) -> None:
    store = service.store
    await store.ingest([ev(1, T0 + 3600)])
    snap = (await store.ingest([ev(2, T0)]))[0]  # an hour late
    assert snap.tally("10m").count == 1 and snap.tally("24h").count == 2
    assert snap.last["id"] == "e1"  # last-seen is not moved back by a late event


async def test_repeat_changes_nothing_and_gets_the_same_decision(service: DecisionService) -> None:
    first = await service.decide_batch([ev(1, T0, type="pin_failure", terminal_id="T1")])
    again = await service.decide_batch([ev(1, T0, type="pin_failure", terminal_id="T1")])
    assert again[0].replayed and again[0].body == first[0].body
    view = await service.store.customer_view("c1")
    assert view["windows"]["24h"]["all"]["count"] == 1
    assert len(view["recent_interactions"]) == 1 and len(view["recent_decisions"]) == 1
    assert view["recent_pin_failures"] == 1


async def test_same_event_twice_in_one_batch_is_decided_once(service: DecisionService) -> None:
    out = await service.decide_batch([ev(1, T0), ev(1, T0)])
    assert not out[0].replayed and out[1].replayed and out[0].body == out[1].body
    assert (await service.store.customer_view("c1"))["windows"]["24h"]["all"]["count"] == 1


async def test_two_customers_with_the_same_event_id_each_get_their_own_decision(
    service: DecisionService,
) -> None:
    """Issue 14, finding 5: one channel system reusing an event id for two customers in one
    batch gave customer B customer A's answer and no alert of its own."""
    out = await service.decide_batch(
        [ev(7, T0, customer="cA"), ev(7, T0 + 1, customer="cB", type="pin_failure", terminal_id="T9")]
    )
    assert [o.replayed for o in out] == [False, False]
    bodies = [orjson.loads(o.body) for o in out]
    assert [b["customer_id"] for b in bodies] == ["cA", "cB"]
    assert bodies[0]["decision_id"] != bodies[1]["decision_id"]
    for customer in ("cA", "cB"):
        view = await service.store.customer_view(customer)
        assert len(view["recent_decisions"]) == 1
    # A redelivery of either is still a replay of its own answer.
    again = await service.decide_batch([ev(7, T0 + 1, customer="cB", type="pin_failure", terminal_id="T9")])
    assert again[0].replayed and again[0].body == out[1].body


async def test_state_is_bounded_and_every_key_expires(service: DecisionService) -> None:
    s = service.settings
    events = [
        ev(i, T0 + i, channel="mobile", type="login", amount=None, device_id=f"d{i}") for i in range(80)
    ]
    for i in range(0, 80, 20):
        await service.decide_batch(events[i : i + 20])
    view = await service.store.customer_view("c1")
    assert len(view["devices"]) == s.known_devices
    assert len(view["recent_interactions"]) == s.recent_events
    assert len(view["recent_decisions"]) == s.recent_decisions
    client = connect(s)
    outboxes = [k.encode() for k in service.store.layout.outboxes]  # type: ignore[attr-defined]
    keys = [k async for k in client.scan_iter(match=f"{s.key_prefix}:*") if k not in outboxes]
    ttls = {k: await client.ttl(k) for k in keys}
    # The outbox has no TTL: the relay deletes each entry once delivered (none runs here).
    waiting = sum([await client.xlen(k) for k in outboxes])
    await client.aclose()
    assert keys and all(ttl > 0 for ttl in ttls.values()), ttls
    assert waiting == len(events), "one outbox entry per decision"


async def test_first_delivery_facts_survive_a_crash_before_record(service: DecisionService) -> None:
    store = service.store
    # Ingest without recording, as if the worker died before storing its decision.
    first = (await store.ingest([ev(1, T0, device_id="dA")]))[0]
    snap = (await store.ingest([ev(2, T0 + 5, device_id="dB")]))[0]
    assert snap.device_known is False and snap.devices == 1
    redelivered = (await store.ingest([ev(2, T0 + 5, device_id="dB")]))[0]
    assert redelivered.duplicate and redelivered.stored_decision is None
    assert redelivered.device_known is False and redelivered.devices == 1  # facts as first seen
    assert redelivered.tally("24h").count == 2 and first.devices == 0


async def test_declines_of_made_up_action_ids_keep_the_cool_down_hash_bounded(
    service: DecisionService,
) -> None:
    """Issue 14, finding 8: each offer_response with a new action id (channel-supplied) added
    a field to the customer's cool-down hash, without bound."""
    from engine.store.codec import DECLINED_BOUND

    n = DECLINED_BOUND + 6
    for i in range(n):
        attrs = {"response": "declined", "action_id": f"made-up-{i}", "decision_id": f"d{i}"}
        await service.decide_batch(
            [ev(1000 + i, T0 + i, type="offer_response", amount=None, attributes=attrs)]
        )
    client = service.store._redis  # type: ignore[attr-defined]
    held = await client.hgetall(service.store.key("c1") + ":declined")
    assert len(held) == DECLINED_BOUND
    assert b"made-up-0" not in held and f"made-up-{n - 1}".encode() in held  # the oldest went first


async def _keys_of(store: StateStore, customer: str) -> dict[bytes, bytes | None]:
    client = store._redis
    return {k: await client.dump(k) async for k in client.scan_iter(match=store.key(customer) + ":*")}


async def test_a_repeat_with_another_payload_is_a_conflict_and_changes_nothing(
    service: DecisionService,
) -> None:
    """Issue 14, finding 7: the payload's digest is bound to the dedupe key at first ingest."""
    store = service.store
    assert isinstance(store, StateStore)
    first = ev(1, T0, device_id="d1")
    [decided] = await service.decide_batch([first])
    before = await _keys_of(store, "c1")
    k = store.key("c1")
    assert await store._redis.hlen(k + ":dm") == 2  # bound in the marker (and the oldest's time)
    assert not any(b":dh:" in key for key in before)
    changed = ev(1, T0, device_id="d2", amount=99.0)
    [snap] = await store.ingest([changed])
    assert snap.conflict and snap.stored_decision is None
    [outcome] = await service.decide_batch([changed])
    assert outcome.conflict and outcome.decision is None and not outcome.replayed
    assert await _keys_of(store, "c1") == before  # no counter, no device, no TTL refreshed... nothing
    [again] = await service.decide_batch([first])
    assert again.replayed and again.body == decided.body and not again.conflict


async def test_a_dedupe_key_written_before_digests_were_bound_replays_any_payload(
    service: DecisionService,
) -> None:
    store = service.store
    assert isinstance(store, StateStore)
    [decided] = await service.decide_batch([ev(1, T0)])
    await store._redis.delete(store.key("c1") + ":dm")  # as the scripts before issue 14 left it
    [outcome] = await service.decide_batch([ev(1, T0, amount=99.0)])
    assert outcome.replayed and outcome.body == decided.body and not outcome.conflict


async def test_a_digest_key_written_before_the_markers_still_binds_the_payload(
    service: DecisionService,
) -> None:
    """Issue 16: a repeat of an event decided before the markers (a ':dd:' answer and a
    ':dh:' digest, no marker) is checked against that digest."""
    store = service.store
    assert isinstance(store, StateStore)
    first = ev(1, T0)
    [decided] = await service.decide_batch([first])
    k = store.key("c1")
    await store._redis.delete(k + ":dm")
    await store._redis.set(k + ":dh:atm:e1", payload_digest(first), ex=600)
    [conflict] = await service.decide_batch([ev(1, T0, amount=99.0)])
    [again] = await service.decide_batch([first])
    assert conflict.conflict and again.replayed and again.body == decided.body


async def test_the_answer_is_kept_for_retries_and_the_marker_for_the_window(
    service: DecisionService,
) -> None:
    """Issue 16: pending facts live the whole window (a first delivery that never finished
    is redone however late), the answer BEACON_DEDUPE_ANSWER_TTL_S, the marker the window."""
    store = service.store
    assert isinstance(store, StateStore)
    settings, k, r = service.settings, store.key("c1"), store._redis
    await store.ingest([ev(1, T0)])
    assert settings.dedupe_ttl_s - 5 <= await r.ttl(k + ":dd:atm:e1") <= settings.dedupe_ttl_s
    await service.decide_batch([ev(2, T0)])
    assert 0 < await r.ttl(k + ":dd:atm:e2") <= settings.dedupe_answer_ttl_s < settings.dedupe_ttl_s
    assert settings.dedupe_ttl_s - 5 <= await r.ttl(k + ":dm") <= settings.dedupe_ttl_s


async def test_a_repeat_after_its_answer_expired_is_acknowledged_and_changes_nothing(
    service: DecisionService,
) -> None:
    """Issue 16: once the answer is gone (BEACON_DEDUPE_ANSWER_TTL_S) but not the marker
    (BEACON_DEDUPE_TTL_S), a repeat is acknowledged as one (code answer_expired): not decided
    again, nothing counted, no TTL refreshed; another payload is still a conflict."""
    store = service.store
    assert isinstance(store, StateStore)
    first = ev(1, T0, device_id="d1")
    [decided] = await service.decide_batch([first])
    assert decided.decision is not None
    await store._redis.delete(store.key("c1") + ":dd:atm:e1")  # as its TTL would
    before = await _keys_of(store, "c1")
    [late, late_again] = await service.decide_batch([first, first])
    assert late.replayed and late.decision is None and not late.conflict
    body = orjson.loads(late.body)
    assert body["replay"]["code"] == "answer_expired" and body["actions"] == []
    assert (body["event_id"], body["customer_id"], body["channel"]) == ("e1", "c1", "atm")
    assert late_again.body == late.body
    [conflict] = await service.decide_batch([ev(1, T0, device_id="d2", amount=99.0)])
    assert conflict.conflict
    assert await _keys_of(store, "c1") == before  # nothing changed, not even a TTL
    view = await store.customer_view("c1")
    assert view["windows"]["24h"]["all"]["count"] == 1 and len(view["recent_decisions"]) == 1


async def test_a_marker_older_than_the_window_counts_as_none_and_old_ones_are_dropped(
    service: DecisionService,
) -> None:
    store = service.store
    assert isinstance(store, StateStore)
    r, k, window = store._redis, store.key("c1") + ":dm", service.settings.dedupe_ttl_s
    await service.decide_batch([ev(1, T0)])
    await store._redis.delete(store.key("c1") + ":dd:atm:e1")
    [field] = [f for f in await r.hkeys(k) if f]
    aged = int(time.time()) - window - window // 8 - 60
    await r.hset(k, mapping={field: struct.pack(">I", aged) + (await r.hget(k, field))[4:], b"": aged})
    [again] = await service.decide_batch([ev(1, T0)])
    assert again.decision is not None and not again.replayed  # decided afresh, as before issue 16
    await r.hset(k, mapping={b"old-mark": struct.pack(">I", aged) + b"12345678", b"": aged})
    await service.decide_batch([ev(2, T0 + 1)])
    marks = await r.hgetall(k)
    assert b"old-mark" not in marks and len(marks) == 3  # e1 (marked again), e2, the oldest time
    assert int(marks[b""]) >= int(time.time()) - 60
