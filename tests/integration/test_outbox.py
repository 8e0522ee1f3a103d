"""Issue 14, finding 4: a commit whose reply is lost loses no alert and no audit record.

The commit script writes each decision's outgoing records (audit record, alerts raised,
label) to the Redis outbox in the same atomic step as the state; the relay delivers them
to Kafka. Against a real Redis and a real broker, started by the test session.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import orjson
import pytest

from agents.bulk import BulkProducer
from agents.relay import Relay
from engine.domain.decision import Decision
from engine.domain.events import Event
from engine.domain.labels import label_of
from engine.domain.scoring import BuiltinScorer
from engine.errors import StoreError
from engine.ops.infra import ensure_topics
from engine.rules.ruleset import Offer
from engine.service.decisions import DecisionService
from engine.service.metrics import Metrics
from engine.settings import Settings
from engine.store.layout import KeyLayout
from engine.store.outbox import Outbox
from engine.store.redisio import connect
from engine.store.state import StateStore
from tests.helpers import consume_until, isolated
from tests.integration.test_script_equivalence import RICH, batches, events
from tests.unit.rulefixture import fixture_rules

pytestmark = pytest.mark.integration
T0 = time.time() - 3600


def pins(customer: str, n: int = 3) -> list[Event]:
    """PIN failures at one terminal: the third raises the pin_bruteforce alert."""
    return [
        Event(f"{customer}-p{i}", customer, "atm", "pin_failure", T0 + i, terminal_id="T1") for i in range(n)
    ]


class LosesOneReply(StateStore):
    """The real store, but the first commit's reply never comes back: Redis ran it (a
    connection dropped, a timeout) and the caller sees only the failure."""

    armed = False

    async def commit(
        self, decisions: Sequence[Decision], offers: Mapping[str, Offer], timings_ms: dict[str, float]
    ) -> list[tuple[Decision | None, bytes]]:
        done = await super().commit(decisions, offers, timings_ms)
        if self.armed:
            self.armed = False
            raise StoreError("decision commit failed: the reply was lost", "connection")
        return done


@pytest.fixture
async def settings(infra: Settings) -> Settings:
    return isolated(infra, max_event_age_s=40 * 86400.0)


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Any]:
    client = connect(settings)
    yield client
    await client.aclose()


def layout_of(settings: Settings) -> KeyLayout:
    return KeyLayout.of(settings.key_prefix, settings.redis_cluster, settings.redis_slot_groups)


async def entries(redis: Any, settings: Settings) -> list[dict[bytes, bytes]]:
    """Every outbox entry, oldest first (on a Redis Cluster, over every group's stream)."""
    found: list[tuple[tuple[int, int], dict[bytes, bytes]]] = []
    for stream in layout_of(settings).outboxes:
        for entry_id, fields in await redis.xrange(stream):
            ms, seq = entry_id.split(b"-")
            found.append(((int(ms), int(seq)), fields))
    return [fields for _, fields in sorted(found, key=lambda f: f[0])]


async def test_a_resent_commit_keeps_the_alert_and_counts_nothing_twice(
    settings: Settings, redis: Any
) -> None:
    """The script line resends a commit whose connection dropped after Redis ran it: the
    second run finds the decision committed and answers what the first stored. Before,
    it ran again: the alert it had just raised was now 'suppressed', so the stored
    answer lost its alert, and the decision was listed twice."""
    store = StateStore(redis, settings)
    service = DecisionService(settings, store, fixture_rules(), BuiltinScorer())
    await service.decide_batch(pins("r1")[:2])
    third = pins("r1")[2]
    [snap] = await store.ingest([third])
    decision = service._followed(_decide(service, third, snap))
    offers = service.rules.offer_index  # type: ignore[union-attr]
    [(first, body)] = await store.commit([decision], offers, {})
    [(second, again)] = await store.commit([decision], offers, {})
    assert again == body and [a["rule_id"] for a in orjson.loads(again)["alerts"]] == ["pin_bruteforce"]
    assert first is not None and second is None  # the resend is a replay
    view = await store.customer_view("r1")
    assert len(view["recent_decisions"]) == 3, "a decision listed twice"
    outbox = await entries(redis, settings)
    assert len(outbox) == 3 and b"al1" in outbox[-1], "one outbox entry per decision, the alert in it"


def _decide(service: DecisionService, event: Event, snap: Any) -> Decision:
    from engine.decide.pipeline import decide

    assert service.rules is not None
    return decide(event, snap, service.rules, service.scorer, service.policy)


async def test_a_lost_commit_reply_still_delivers_the_alert_and_the_audit_record(
    settings: Settings, redis: Any
) -> None:
    """The finding: the reply of the commit that raised an alert is lost; the retry is a
    replay (its event was stored), which publishes nothing. Before the outbox the alert
    and the audit record were never published, and the suppression key blocked a new
    alert for the rule's window. Now the relay delivers both from the outbox."""
    await ensure_topics(settings)
    store = LosesOneReply(redis, settings)
    service = DecisionService(settings, store, fixture_rules(), BuiltinScorer())
    await service.decide_batch(pins("l1")[:2])
    third = pins("l1")[2]
    store.armed = True
    with pytest.raises(StoreError):
        await service.decide_batch([third])
    [retry] = await service.decide_batch([third])  # what the Kafka path does
    assert retry.replayed and retry.decision is None
    assert [a["rule_id"] for a in orjson.loads(retry.body)["alerts"]] == ["pin_bruteforce"]
    did = orjson.loads(retry.body)["decision_id"]

    async with relaying(settings, redis) as metrics:
        out = await consume_until(
            settings.kafka_bootstrap, [settings.topic("risk.alerts"), settings.topic("decisions.audit")], 4,
            timeout=30,
        )  # fmt: skip
        backlog = await Outbox(redis, settings).backlog()
    alerts = [orjson.loads(v) for t, _, v, _ in out if t == settings.topic("risk.alerts")]
    audits = [orjson.loads(v) for t, _, v, _ in out if t == settings.topic("decisions.audit")]
    assert [(a["decision_id"], a["rule_id"]) for a in alerts] == [(did, "pin_bruteforce")]
    assert did in [a["decision_id"] for a in audits] and len(audits) == 3
    assert all(k == b"l1" for _, k, _, _ in out)
    assert backlog == 0 and metrics.registry.get_sample_value("beacon_outbox_relayed_total") == 3


@contextlib.asynccontextmanager
async def relaying(settings: Settings, redis: Any) -> AsyncIterator[Metrics]:
    metrics = Metrics()
    bulk = BulkProducer(settings, metrics)
    await bulk.start()
    relay = Relay(Outbox(redis, settings), bulk, settings, metrics)
    task = asyncio.create_task(relay.run())
    try:
        yield metrics
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await bulk.stop()


async def test_an_entry_another_relay_read_and_never_delivered_is_claimed(
    settings: Settings, redis: Any
) -> None:
    """A worker's relay read an entry and died before delivering it: another relay takes
    it over once it has been idle for outbox_claim_idle_s."""
    settings = settings.replace(outbox_claim_idle_s=0.5)
    await ensure_topics(settings)
    service = DecisionService(settings, StateStore(redis, settings), fixture_rules(), BuiltinScorer())
    [outcome] = await service.decide_batch(pins("d1", 1))
    dead = Outbox(redis, settings, consumer="dead-worker")
    await dead.ensure_group()
    assert len(await dead.read(10, None)) == 1  # read, never delivered
    did = orjson.loads(outcome.body)["decision_id"]
    async with relaying(settings, redis):
        out = await consume_until(
            settings.kafka_bootstrap, [settings.topic("decisions.audit")], 1, timeout=30,
            done=lambda records: did in {orjson.loads(v)["decision_id"] for _, _, v, _ in records},
        )  # fmt: skip
        await asyncio.sleep(0.5)
        backlog = await Outbox(redis, settings).backlog()
    assert did in {orjson.loads(v)["decision_id"] for _, _, v, _ in out}
    assert backlog == 0


@pytest.mark.parametrize("seed", [1, 2])
async def test_the_audit_record_the_commit_writes_is_the_one_python_builds(
    settings: Settings, redis: Any, seed: int
) -> None:
    """The commit script fills the audit record's holes (actions shown, alerts raised,
    kept, dropped with the cap that stopped each, suppressed alerts) as apply_commit
    does in Python: over a mixed history (caps, cool-downs, suppressed alerts, repeats),
    each outbox entry holds the committed decision's audit record, its alerts and label."""
    settings = settings.replace(key_prefix=f"ob{uuid.uuid4().hex[:8]}", open_alerts=2)
    store = StateStore(redis, settings)
    await store.put_profiles([(c, RICH) for c in ("c1", "c2", "c3", "rich")], 86400)
    service = DecisionService(settings, store, fixture_rules(), BuiltinScorer())
    committed: list[tuple[Decision, dict[str, float]]] = []
    answer = Event("resp", "c1", "mobile", "offer_response", T0, attributes={
        "decision_id": "d-1", "action_id": "credit_card_gold", "response": "accepted"})  # fmt: skip
    history = [*batches(events(seed, 300), random.Random(seed)), pins("sx", 3), pins("sx", 5)[3:], [answer]]
    for batch in history:
        for outcome in await service.decide_batch(batch):
            if outcome.decision is not None:
                committed.append((outcome.decision, outcome.timings_ms))
    outbox = {orjson.loads(fields[b"a"])["decision_id"]: fields for fields in await entries(redis, settings)}
    assert len(outbox) == len(committed)
    seen = {"capped": 0, "suppressed": 0, "alerts": 0, "labels": 0}
    for decision, timings in committed:
        fields = outbox[decision.decision_id]
        stage = {k: v for k, v in timings.items() if k != "record_ms"}  # known after the commit only
        assert orjson.loads(fields[b"a"]) == orjson.loads(decision.audit_bytes(stage)), decision.decision_id
        alerts = [orjson.loads(v) for k, v in fields.items() if k.startswith(b"al")]
        assert alerts == [orjson.loads(decision.alert_bytes(a)) for a in decision.alerts]
        label = label_of(decision.event)
        assert (orjson.loads(fields[b"f"]) if b"f" in fields else None) == label
        assert fields[b"c"] == decision.event.customer_id.encode()
        seen["capped"] += any(d.stage == "contact_policy" for d in decision.dropped)
        seen["suppressed"] += "suppressed_alerts" in decision.explanation
        seen["alerts"] += bool(alerts)
        seen["labels"] += label is not None
    assert all(seen.values()), seen  # the history reaches every hole


async def test_consumers_of_workers_gone_are_forgotten(settings: Settings, redis: Any) -> None:
    """Each worker start joins the relay group under a new name: the ones with nothing
    pending and idle long enough are dropped; one holding entries is kept."""
    gone, idle = Outbox(redis, settings, consumer="gone"), Outbox(redis, settings, consumer="idle")
    await gone.ensure_group()
    service = DecisionService(settings, StateStore(redis, settings), fixture_rules(), BuiltinScorer())
    await service.decide_batch(pins("fc", 2))
    assert len(await gone.read(1, None)) == 1  # gone holds one, undelivered
    [delivered] = await idle.read(1, None)
    await idle.done([delivered])  # idle delivered its own: it holds nothing
    await asyncio.sleep(0.05)
    assert await Outbox(redis, settings, consumer="me").forget_idle_consumers(idle_ms=10) == 1
    stream = layout_of(settings).outbox(layout_of(settings).group_of("fc"))
    names = {c["name"] for c in await redis.xinfo_consumers(stream, "relay")}
    assert names == {b"gone"}, names
