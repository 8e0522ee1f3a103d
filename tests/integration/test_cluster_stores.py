"""The adapters besides the customer state, on a real Redis Cluster (issue 16): the alert
desk, rule versions, model snapshots, and users, tokens and sessions, each through
``connect(settings)`` with ``redis_cluster`` on (three masters, three replicas).

Most tests are the single-Redis ones, collected here a second time: this module's
``infra`` is the cluster, so their fixtures (``desk``, ``settings``, ``client``) build
cluster clients. Left out: tests that start worker processes or build a RuleWatcher (both
need the StateStore, not cluster-ready yet: its ScriptLine reads ``client.connection_pool``,
which RedisCluster has not), tests that only check a dead single Redis, and the poll-only
model swap (nothing of the cluster in it). Their retention checks list keys with KEYS,
which the cluster client sends to one node only: the cluster versions below ask every
master.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import CrossSlotTransactionError

from engine.errors import StoreError
from engine.ops.infra import start_embedded
from engine.ops.launcher import isolated
from engine.ops.rediscluster import key_slot
from engine.settings import Settings
from engine.store.alerts import AlertDesk, AlertFilter
from engine.store.keys import AuthKeys, DeskKeys, ModelKeys, RuleKeys
from engine.store.redisio import connect, guarded
from engine.store.rules import RuleStore, UnknownVersion
from engine.store.ruleshadow import ShadowStore
from engine.store.snapshots import SnapshotStore
from engine.store.users import AuthError, AuthStore, TooManyLogins
from tests.integration.test_alertdesk import (  # noqa: F401 - collected again, on the cluster
    alert,
    desk,
    test_a_burst_is_one_alert_with_every_event,
    test_a_filter_that_matches_little_scans_a_bounded_slice_per_request,
    test_critical_alerts_escalate_when_nobody_acknowledges,
    test_lifecycle_audit_and_labels,
    test_listing_filters_and_pages,
    test_snooze_holds_back_the_rule_for_the_customer,
)
from tests.integration.test_model_snapshots import (  # noqa: F401
    KEYS,
    river_model,
    test_a_restarted_worker_warm_starts_from_the_latest,
    test_a_second_trainer_is_detected_not_forked,
    test_an_unpicklable_model_is_a_model_error,
    test_concurrent_publishes_never_move_the_pointer_back,
    test_hot_swap_after_a_publish_takes_milliseconds,
    test_publish_latest_round_trip_with_a_river_model,
    test_tampered_or_foreign_snapshots_are_refused_and_the_old_model_stays,
    test_two_workers_end_on_the_same_version,
    test_without_a_signing_key_nothing_is_published_or_loaded,
)
from tests.integration.test_rules_versions import (  # noqa: F401
    test_publish_current_history_rollback_round_trip,
    test_two_workers_seeding_at_once_publish_one_version,
)
from tests.rulebundles import bundle

pytestmark = pytest.mark.integration
NOW = 1_795_428_000_000
PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def infra(redis_cluster: Settings) -> Settings:
    return redis_cluster


@pytest.fixture
def settings(infra: Settings) -> Settings:
    # One fixture for the rules and the snapshot tests above (the rules ignore the key).
    return isolated(infra, **KEYS, model_poll_s=30.0)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    c = connect(settings)
    try:
        yield c
    finally:
        await c.aclose()


async def names_on_every_master(client: aioredis.Redis, pattern: str) -> list[str]:
    """KEYS on every master, merged (the cluster client sends plain KEYS to one node)."""
    found = await client.keys(pattern, target_nodes=RedisCluster.PRIMARIES)
    return sorted(k.decode() for k in found)


async def test_the_fixture_is_a_cluster_of_three_masters(client: aioredis.Redis) -> None:
    assert isinstance(client, RedisCluster)
    assert await client.ping()
    assert len(client.get_primaries()) == 3 and len(client.get_replicas()) == 3


def test_each_store_keeps_what_one_script_changes_in_one_slot(settings: Settings) -> None:
    p = settings.key_prefix
    dk, auth = DeskKeys.of(p), AuthKeys.of(p)
    groups = {
        "desk": [dk.alert("a1"), dk.audit("a1"), dk.by_time, dk.sla, dk.backlog, dk.groups],
        "rules": RuleKeys.of(p).writes(),
        "risk model": ModelKeys.of(p, "risk").all(),
        "auth": [
            auth.users,
            auth.tokens,
            auth.token_used,
            auth.epochs,
            auth.session("x"),
            auth.tries("ip:1.2.3.4"),
        ],
    }
    slots = {name: {key_slot(k) for k in keys} for name, keys in groups.items()}
    assert all(len(s) == 1 for s in slots.values()), slots


# -- rules and models: retention, and the keys really on the cluster -------------------------


async def test_rule_versions_stay_bounded_in_one_namespace(
    client: aioredis.Redis, settings: Settings
) -> None:
    store = RuleStore(client, settings.key_prefix, keep=3, history_cap=4)
    keys = RuleKeys.of(settings.key_prefix)
    first = await store.publish(bundle("r0"), "t")
    for i in range(1, 6):
        await store.publish(bundle(f"r{i}"), "t")
    assert await client.hlen(keys.bundles) == 3 and await client.llen(keys.history) == 4
    with pytest.raises(UnknownVersion, match="keeps the last 3 versions"):
        await store.rollback(first, "t")
    # A shadow version (engine/store/ruleshadow.py): its scripts touch the same slot, and add one key.
    shadow = ShadowStore(client, settings.key_prefix, keep=3, history_cap=4)
    candidate = await shadow.start(bundle("s"), "t")
    assert await shadow.promote(candidate, bundle("s"), "t") != candidate
    await shadow.start(bundle("s2"), "t")
    assert await names_on_every_master(client, f"{settings.key_prefix}:rules:*") == sorted(keys.writes())


async def test_model_snapshots_stay_bounded_and_models_spread(
    client: aioredis.Redis, settings: Settings
) -> None:
    store = SnapshotStore(client, settings, keep=2, history_cap=3)
    names = ("risk", "churn", "offer_propensity")
    for i in range(4):
        for name in names:
            await store.publish(name, river_model(i), {"i": i})
    for name in names:
        latest = await store.latest(name)
        assert latest is not None and latest[2]["i"] == 3
        versions = [v.version for v in await store.versions(name)]
        assert len(versions) == 2 and versions[0] == latest[0] == await store.current_version(name)
    found = await names_on_every_master(client, f"{settings.key_prefix}:models:*")
    assert found == sorted(k for n in names for k in ModelKeys.of(settings.key_prefix, n).all())


async def test_snapshot_and_rule_announcements_reach_subscribers_on_the_cluster(settings: Settings) -> None:
    subscriber, publisher = connect(settings), connect(settings)
    try:
        rules, snapshots = RuleStore(subscriber, settings.key_prefix), SnapshotStore(subscriber, settings)
        async with rules.notifications() as rule_news, snapshots.notifications() as model_news:
            assert await rule_news.wait(0.2) is False and await model_news.wait(0.2) is None
            await RuleStore(publisher, settings.key_prefix).publish(bundle("a"), "alice")
            version = await SnapshotStore(publisher, settings).publish("risk", river_model(1))
            assert await rule_news.wait(5.0) is True
            assert await model_news.wait(5.0) == version
    finally:
        await subscriber.aclose()
        await publisher.aclose()


# -- the alert desk's live feed ---------------------------------------------------------------


async def next_change(feed: AsyncIterator[dict[str, Any] | None], tries: int = 10) -> dict[str, Any]:
    for _ in range(tries):  # None is a keep-alive, once a second
        change = await anext(feed)
        if change is not None:
            return change
    raise AssertionError("no alert change within the keep-alives")


async def test_the_desk_feed_hears_raises_and_moves_through_the_cluster(
    desk: AlertDesk,  # noqa: F811 - the fixture imported above
    infra: Settings,
) -> None:
    writer_client = connect(infra)  # another worker's connection, maybe to another node
    writer = AlertDesk(writer_client, desk.key_prefix, 86400, 600, {})
    try:
        async with desk.changes() as feed:
            await asyncio.sleep(0.3)  # subscribed
            await writer.raise_alert(alert(1), NOW)
            await writer.move("a1", "ack", "ann", NOW + 10)
            raised, moved = await next_change(feed), await next_change(feed)
    finally:
        await writer_client.aclose()
    print(f"\ndesk changes heard through the cluster: {raised}, {moved}")
    assert raised != moved and "a1" in str(raised) and "a1" in str(moved)
    page = await desk.find(AlertFilter(status="acknowledged"))
    assert [d["alert_id"] for d in page.alerts] == ["a1"]
    # The inbox's indexes share the desk's slot: a filtered page and its counts are one
    # script call each on the cluster (issue 19, item 5).
    flt = AlertFilter(severity=alert(1)["severity"], customer=alert(1)["customer_id"])
    assert [d["alert_id"] for d in (await desk.find(flt, limit=1)).alerts] == ["a1"]
    counts, exact = await desk.counts(flt, NOW + 20)
    assert exact and counts["acknowledged"] == 1 and sum(counts.values()) == 1


# -- users, tokens and sessions ---------------------------------------------------------------


@pytest.fixture
async def auth(settings: Settings) -> AsyncIterator[AuthStore]:
    c = connect(settings)
    try:
        yield AuthStore(c, settings.key_prefix, session_ttl_s=600)
    finally:
        await c.aclose()


async def test_users_tokens_and_sessions_on_the_cluster(auth: AuthStore) -> None:
    await auth.add_user("vera", "risk_officer", PASSWORD)
    await auth.add_user("walt", "viewer", PASSWORD + "!")
    assert await auth.users() == {"vera": {"role": "risk_officer"}, "walt": {"role": "viewer"}}
    token = await auth.add_token("channel", "atm switch", channel="atm")
    who = await auth.token_principal(token)
    assert who is not None and (who.role, who.channel) == ("channel", "atm")
    assert await auth.token_principal(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    session = await auth.login("vera", PASSWORD, "10.0.0.1")
    person = await auth.session_principal(session)
    assert person is not None and (person.name, person.role) == ("vera", "risk_officer")
    assert await auth.session_principal("nope") is None
    await auth.revoke_sessions("vera")  # sessions follow the user: a revoke ends them
    assert await auth.session_principal(session) is None
    session = await auth.login("vera", PASSWORD, "10.0.0.1")
    await auth.logout(session)
    assert await auth.session_principal(session) is None
    assert await auth.revoke_token(token.split("_", 2)[1]) and await auth.token_principal(token) is None
    with pytest.raises(AuthError):
        await auth.login("vera", "wrong password!", "10.0.0.1")


async def test_login_limits_count_in_one_script_on_the_cluster(auth: AuthStore) -> None:
    await auth.add_user("nina", "viewer", PASSWORD)
    for _ in range(auth.failures_per_minute):
        with pytest.raises(AuthError):
            await auth.login("nina", "wrong password!", "10.0.0.2")
    with pytest.raises(TooManyLogins):
        await auth.login("nina", PASSWORD, "10.0.0.2")  # even the right one, for a while
    assert await auth.login("nina", PASSWORD, "10.0.0.3")  # another address still may


# -- a command across slots ----------------------------------------------------------------------
# Every store above keeps what one call touches in one slot; these show what a call across
# slots gets. A client's first command goes to Redis, which refuses it (CROSSSLOT, a
# ResponseError, so a StoreError). Once the client knows the slots (after any command) redis-py
# refuses it itself, with a RedisClusterException, which is not a RedisError.

CROSS = ["{a}x", "{b}x"]  # slots 15495 and 3300: the server message names neither


async def test_a_fresh_clients_call_across_slots_is_a_store_error(settings: Settings) -> None:
    fresh = connect(settings)
    try:
        with pytest.raises(StoreError, match="cross-slot probe failed: Keys in request don't hash") as info:
            await guarded("cross-slot probe", fresh.mget(CROSS))
    finally:
        await fresh.aclose()
    assert info.value.kind == "cross_slot" and "engine/store/keys.py" in str(info.value)
    print(f"\ncross-slot, first command of a client: StoreError({info.value}, kind={info.value.kind})")


async def test_a_script_across_slots_is_refused_by_the_client(client: aioredis.Redis) -> None:
    await client.ping()  # the client now knows the slots: redis-py refuses before sending
    script = client.register_script("return redis.call('GET', KEYS[1])")
    with pytest.raises(StoreError, match="EVALSHA - all keys must map to the same key slot") as info:
        await guarded("cross-slot probe", script(keys=CROSS))
    assert info.value.kind == "cross_slot"
    print(f"\ncross-slot script, known slots: {info.value}")


async def test_a_call_across_slots_becomes_a_store_error(client: aioredis.Redis) -> None:
    await client.ping()
    with pytest.raises(StoreError, match="cross-slot probe failed") as info:
        await guarded("cross-slot probe", client.mget(CROSS))
    assert info.value.kind == "cross_slot"


async def test_a_transaction_across_slots_is_refused(client: aioredis.Redis) -> None:
    async with client.pipeline(transaction=True) as pipe:
        pipe.set("{a}x", 1)
        pipe.set("{b}x", 1)
        with pytest.raises(CrossSlotTransactionError, match="must map to the same slot"):
            await pipe.execute()


# -- start_embedded with BEACON_REDIS_CLUSTER (what `make demo` does) ---------------------------


def test_start_embedded_starts_a_cluster_for_cluster_settings(tmp_path: Path) -> None:
    base = Settings.build().replace(redis_url="", redis_cluster=True)
    emb = start_embedded(base, log_dir=str(tmp_path), broker=False)
    procs = list(emb.procs)
    try:
        assert emb.cluster is not None and len(procs) == 6
        assert sorted(n.role for n in emb.cluster.nodes) == ["master"] * 3 + ["replica"] * 3
        settings = emb.settings_for(base)
        assert settings.redis_cluster and settings.redis_url == emb.redis_url == emb.cluster.url

        async def round_trip() -> bytes | None:
            c = connect(settings)
            try:
                await c.set("{probe}k", b"v")
                return await c.get("{probe}k")
            finally:
                await c.aclose()

        assert asyncio.run(round_trip()) == b"v"
    finally:
        emb.stop()
    assert all(p.poll() is not None for p in procs)
