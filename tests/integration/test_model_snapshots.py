"""Model snapshots in real Redis: signed round trip with a River model, refusal of
tampered or foreign snapshots, hot swap (timed), warm start, bounded retention, two
workers converging, forked trainers detected."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from river import linear_model

from engine.errors import StoreError
from engine.ops.launcher import isolated
from engine.service.modelwatch import ModelWatcher
from engine.settings import Settings
from engine.store.keys import ModelKeys
from engine.store.redisio import connect
from engine.store.signkeys import trusted
from engine.store.snapshots import ANY, SnapshotStore
from models.ed25519 import key_id
from models.errors import ModelError, SigningKeyError, SnapshotConflict, SnapshotRefused
from models.metrics import ModelMetrics
from models.signing import SnapshotVersion
from tests.helpers import signing_keys

pytestmark = pytest.mark.integration

KEYS = signing_keys()
X: tuple[dict[str, float], ...] = ({"a": 0.0, "b": 1.0}, {"a": 2.0, "b": -1.0}, {"a": 7.5}, {})


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def river_model(seed: int = 0) -> linear_model.LogisticRegression:
    m = linear_model.LogisticRegression()
    m.learn_one({"a": 1.0}, True)
    for i in range(seed):
        m.learn_one({"a": float(i % 5), "b": float(seed)}, i % 3 == 0)
    return m


def same_predictions(a: Any, b: Any) -> bool:
    return all(a.predict_proba_one(x) == b.predict_proba_one(x) for x in X)


@pytest.fixture
def settings(infra: Settings) -> Settings:
    return isolated(infra, **KEYS, model_poll_s=30.0)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    c = connect(settings)
    try:
        yield c
    finally:
        await c.aclose()


class Worker:
    """What a scoring worker keeps: the installed models, swapped by one assignment."""

    def __init__(self) -> None:
        self.models: dict[str, tuple[str, object]] = {}
        self.installed_at: dict[str, float] = {}

    def install(self, name: str, version: str, model: object) -> None:
        self.models[name] = (version, model)
        self.installed_at[version] = time.perf_counter()


def watcher(
    store: SnapshotStore, settings: Settings, names: tuple[str, ...] = ("risk",)
) -> tuple[ModelWatcher, Worker]:
    worker = Worker()
    return ModelWatcher(store, worker.install, names, settings, ModelMetrics()), worker


def refused(w: ModelWatcher, name: str = "risk") -> float | None:
    return w.metrics.registry.get_sample_value("beacon_model_snapshot_refused_total", {"model": name})


@contextlib.asynccontextmanager
async def watching(w: ModelWatcher) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(w.watch())
    try:
        await asyncio.sleep(0.3)  # subscribed
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(check: Callable[[], bool], timeout: float) -> float:
    """Seconds until ``check()`` held (polled every 2 ms); fails after ``timeout``."""
    started = time.perf_counter()
    while not check():
        assert time.perf_counter() - started < timeout, "not within the timeout"
        await asyncio.sleep(0.002)
    return time.perf_counter() - started


async def test_publish_latest_round_trip_with_a_river_model(
    client: aioredis.Redis, settings: Settings
) -> None:
    store = SnapshotStore(client, settings)
    assert await store.latest("risk") is None and await store.current_version("risk") is None
    model = river_model()
    v1 = await store.publish("risk", model, {"learned": 1, "offset": {"feedback/0": 41}})
    parsed = SnapshotVersion.parse(v1)
    assert (parsed.name, parsed.number) == ("risk", 1)
    latest = await store.latest("risk")
    assert latest is not None
    version, loaded, meta = latest
    assert version == v1 == await store.current_version("risk") and loaded is not model
    assert isinstance(loaded, linear_model.LogisticRegression) and same_predictions(loaded, model)
    published_at = meta.pop("published_at")  # added by latest(): when the trainer published it
    assert meta == {"learned": 1, "offset": {"feedback/0": 41}}
    assert abs(published_at - time.time()) < 3600  # a sane Unix time, not a duration
    model.learn_one({"a": 3.0, "b": 2.0}, False)
    v2 = await store.publish("risk", model, {"learned": 2})
    assert SnapshotVersion.parse(v2).number == 2 and v2 != v1
    latest = await store.latest("risk")
    assert latest is not None and latest[0] == v2 and same_predictions(latest[1], model)
    listed = await store.versions("risk")
    assert [(i.version, i.current, i.meta) for i in listed] == [
        (v2, True, {"learned": 2}),
        (v1, False, listed[1].meta),
    ]
    assert listed[0].key_id == key_id(trusted(settings)[0]) and listed[0].size > 0
    history = await store.history("risk")
    assert [(e["version"], e["previous"], e["action"]) for e in history] == [
        (v2, v1, "publish"),
        (v1, "", "publish"),
    ]
    assert abs(history[0]["published_at"] - time.time()) < 60
    assert await store.latest("churn") is None  # models are independent


async def test_tampered_or_foreign_snapshots_are_refused_and_the_old_model_stays(
    client: aioredis.Redis, settings: Settings, tmp_path: Path
) -> None:
    store = SnapshotStore(client, settings)
    keys = store.keys("risk")
    good = river_model(5)
    v1 = await store.publish("risk", good)
    w, worker = watcher(store, settings)
    assert await w.load_initial() == {"risk": v1}
    running = worker.models["risk"][1]

    # 1. a payload replaced in Redis (here: one that would run code if unpickled)
    v2 = await store.publish("risk", river_model(9))
    marker = tmp_path / "pwned"
    evil = b"cos\nmkdir\n(V" + str(marker).encode() + b"\ntR."  # pickle protocol 0: os.mkdir(marker)
    await client.hset(keys.payloads, v2, evil)
    with pytest.raises(SnapshotRefused, match="payload does not match its signed digest"):
        await store.latest("risk")
    assert await w.check("risk") is False and not marker.exists()
    assert worker.models["risk"] == (v1, running) and w.active["risk"] == v1 and refused(w) == 1.0
    assert await w.check("risk") is False and refused(w) == 1.0  # counted once, not each poll

    # 2. a snapshot signed with another key (a test deployment's trainer writing to production)
    foreign = SnapshotStore(client, settings.replace(**signing_keys()))
    v3 = await foreign.publish("risk", river_model(11))
    with pytest.raises(SnapshotRefused, match=r"signed by an untrusted key .* \(trusted: "):
        await store.latest("risk")
    assert await w.check("risk") is False and w.refused["risk"] == v3 and refused(w) == 2.0

    # 3. a manifest edited in Redis (meta changed, signature kept)
    v4 = await store.publish("risk", river_model(12), {"auc": 0.61})
    record = await client.hget(keys.records, v4)
    assert isinstance(record, bytes)
    await client.hset(keys.records, v4, record.replace(b'"auc":0.61', b'"auc":0.99'))
    assert await w.check("risk") is False and refused(w) == 3.0
    assert worker.models["risk"] == (v1, running)  # still the model it started with

    # 4. a genuine version afterwards is installed at once
    v5 = await store.publish("risk", river_model(13))
    assert await w.check("risk") is True and worker.models["risk"][0] == v5 and "risk" not in w.refused
    assert (
        w.metrics.registry.get_sample_value("beacon_model_version_info", {"model": "risk", "version": v5})
        == 1
    )
    assert (
        w.metrics.registry.get_sample_value("beacon_model_version_info", {"model": "risk", "version": v1})
        is None
    )
    assert [v.version for v in await store.versions("risk")][:2] == [v5, v4]
    assert os.listdir(tmp_path) == []


async def test_hot_swap_after_a_publish_takes_milliseconds(
    client: aioredis.Redis, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    trainer = connect(settings)  # the trainer is another process: its own connection
    store = SnapshotStore(trainer, settings)
    await store.publish("risk", river_model(1))
    # The worker polls every 30 s (settings fixture): only the announcement can be this fast.
    w, worker = watcher(SnapshotStore(client, settings), settings)
    await w.load_initial()
    lags = []
    async with watching(w), contextlib.aclosing(trainer):
        for i in range(2, 12):
            published = time.perf_counter()
            version = await store.publish("risk", river_model(i))
            returned = time.perf_counter()
            await until(lambda v=version: w.active.get("risk") == v, timeout=5)  # type: ignore[misc]
            lags.append((worker.installed_at[version] - returned, returned - published))
            assert same_predictions(worker.models["risk"][1], river_model(i))
            await asyncio.sleep(0.05)
    swap = sorted(lag for lag, _ in lags)
    with capsys.disabled():
        print(
            f"\nmodel hot swap via pub/sub, 10 publishes: from publish() returning to install() "
            f"median {swap[len(swap) // 2] * 1000:.1f} ms, max {swap[-1] * 1000:.1f} ms; "
            f"publish() itself median {sorted(p for _, p in lags)[len(lags) // 2] * 1000:.1f} ms"
        )
    assert swap[-1] < 5.0


class Deaf:
    """A subscription that never hears an announcement: only the poll is left."""

    async def wait(self, timeout: float) -> None:
        await asyncio.sleep(timeout)


async def test_a_lost_announcement_is_caught_by_the_poll(
    client: aioredis.Redis,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    s = settings.replace(model_poll_s=0.5)
    store = SnapshotStore(client, s)

    @contextlib.asynccontextmanager
    async def deaf() -> AsyncIterator[Deaf]:
        yield Deaf()

    monkeypatch.setattr(store, "notifications", deaf)
    w, _ = watcher(store, s)
    await w.load_initial()
    async with watching(w):
        version = await store.publish("risk", river_model(3))
        took = await until(lambda: w.active.get("risk") == version, timeout=3)
    with capsys.disabled():
        print(f"\nmodel swap by poll alone (model_poll_s=0.5): {took * 1000:.0f} ms")
    assert took < 1.5


async def test_a_restarted_worker_warm_starts_from_the_latest(
    client: aioredis.Redis, settings: Settings
) -> None:
    store = SnapshotStore(client, settings)
    models = [river_model(i) for i in range(1, 4)]
    for m in models:
        last = await store.publish("risk", m, {"n": 1})
    await store.publish("churn", river_model(7))
    other = connect(settings)  # a new process: its own connection, store and watcher
    try:
        w, worker = watcher(SnapshotStore(other, settings), settings, ("risk", "churn", "offer_propensity"))
        active = await w.load_initial()
        assert active["risk"] == last and set(active) == {"risk", "churn"} and w.loaded.is_set()
        assert same_predictions(worker.models["risk"][1], models[-1])
        assert "offer_propensity" not in worker.models  # nothing published yet: keeps its built-in model
    finally:
        await other.aclose()


async def test_retention_is_bounded_and_keeps_the_current(client: aioredis.Redis, settings: Settings) -> None:
    store = SnapshotStore(client, settings, keep=3, history_cap=4)
    keys = store.keys("risk")
    published = []
    for i in range(8):
        published.append(await store.publish("risk", river_model(i), {"i": i}))
        assert await client.hlen(keys.records) <= 3 and await client.hlen(keys.payloads) <= 3
        assert await client.zcard(keys.ranks) <= 3 and await client.llen(keys.history) <= 4
        latest = await store.latest("risk")
        assert latest is not None and latest[0] == published[-1]
    assert [v.version for v in await store.versions("risk")] == published[::-1][:3]
    stored = sorted(_text(k) for k in await client.hkeys(keys.payloads))
    assert stored == sorted(published[-3:])
    names = sorted(_text(k) for k in await client.keys(f"{settings.key_prefix}:models:*"))
    assert names == sorted(keys.all())  # one namespace, six keys, all bounded
    assert [await client.ttl(n) for n in names] == [-1] * len(names)  # no TTL: bounded instead
    assert ModelKeys.of(settings.key_prefix, "risk").current.startswith(f"{settings.key_prefix}:models:{{")


async def test_two_workers_end_on_the_same_version(settings: Settings) -> None:
    s = settings.replace(model_poll_s=1.0)
    trainer, one, two = connect(s), connect(s), connect(s)
    try:
        store = SnapshotStore(trainer, s)
        await store.publish("risk", river_model(0))
        w1, k1 = watcher(SnapshotStore(one, s), s, ("risk", "churn"))
        w2, k2 = watcher(SnapshotStore(two, s), s, ("risk", "churn"))
        await asyncio.gather(w1.load_initial(), w2.load_initial())
        async with watching(w1), watching(w2):
            for i in range(1, 8):  # back to back: some announcements overtake earlier swaps
                await store.publish("risk", river_model(i))
                await store.publish("churn", river_model(i + 20))
            final = {
                "risk": await store.current_version("risk"),
                "churn": await store.current_version("churn"),
            }
            await until(lambda: w1.active == final == w2.active, timeout=5)
        assert {n: k1.models[n][0] for n in final} == {n: k2.models[n][0] for n in final} == final
        assert same_predictions(k1.models["risk"][1], k2.models["risk"][1])
        assert refused(w1) == refused(w2) == 0.0
    finally:
        for c in (trainer, one, two):
            await c.aclose()


async def test_a_second_trainer_is_detected_not_forked(client: aioredis.Redis, settings: Settings) -> None:
    store = SnapshotStore(client, settings)
    v1 = await store.publish("risk", river_model(1), parent=None)
    with pytest.raises(SnapshotConflict, match=r"current version .* is not none, the parent"):
        await store.publish("risk", river_model(2), parent=None)
    a = await store.publish("risk", river_model(3), parent=v1)  # trainer A, warm-started from v1
    with pytest.raises(SnapshotConflict, match=f"current version {a} is not {v1}, the parent.*must not fork"):
        await store.publish("risk", river_model(4), parent=v1)  # trainer B, also from v1
    assert await store.current_version("risk") == a
    assert [e["version"] for e in await store.history("risk")] == [a, v1]  # refused publishes left no trace
    assert await store.publish("risk", river_model(5), parent=ANY) != a


async def test_concurrent_publishes_never_move_the_pointer_back(settings: Settings) -> None:
    clients = [connect(settings) for _ in range(4)]
    try:
        stores = [SnapshotStore(c, settings) for c in clients]
        results = await asyncio.gather(
            *(st.publish("risk", river_model(i)) for i, st in enumerate(stores * 3)), return_exceptions=True
        )
        won = [r for r in results if isinstance(r, str)]
        assert won and all(isinstance(r, (str, SnapshotConflict)) for r in results)
        current = await stores[0].current_version("risk")
        assert current is not None
        assert SnapshotVersion.parse(current).number == max(SnapshotVersion.parse(v).number for v in won)
    finally:
        for c in clients:
            await c.aclose()


async def test_without_a_signing_key_nothing_is_published_or_loaded(
    client: aioredis.Redis, settings: Settings
) -> None:
    signed = SnapshotStore(client, settings)
    v1 = await signed.publish("risk", river_model(1))
    for missing in ("", "/nonexistent/beacon.pem"):
        none = settings.replace(signing_key_file=missing, signing_public_keys=missing)
        unsigned = SnapshotStore(client, none)
        with pytest.raises(SigningKeyError, match=r"signing_key_file is not set|cannot be read"):
            await unsigned.publish("risk", river_model(2))
        with pytest.raises(SigningKeyError, match=r"signing_public_keys is not set|cannot be read"):
            await unsigned.latest("risk")
        w, worker = watcher(unsigned, none)
        assert await w.load_initial() == {} and worker.models == {} and refused(w) == 0.0
        assert [v.version for v in await unsigned.versions("risk")] == [v1]  # listing needs no key
    assert await signed.current_version("risk") == v1
    assert await client.get(signed.keys("risk").seq) == b"1"  # refused before reserving a number


async def test_an_unpicklable_model_is_a_model_error(client: aioredis.Redis, settings: Settings) -> None:
    with pytest.raises(ModelError, match="model risk: cannot be pickled"):
        await SnapshotStore(client, settings).publish("risk", lambda x: x)
    assert await client.get(ModelKeys.of(settings.key_prefix, "risk").seq) is None


async def test_redis_failures_become_store_errors(settings: Settings) -> None:
    dead = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    store = SnapshotStore(dead, settings)
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: store.publish("risk", river_model()),
        lambda: store.latest("risk"),
        lambda: store.versions("risk"),
        lambda: store.current_version("risk"),
    ]
    try:
        for call in calls:
            with pytest.raises(StoreError, match=r"model snapshot .* failed"):
                await call()
        w, _ = watcher(store, settings)
        assert await w.load_initial() == {}
    finally:
        await dead.aclose()


def test_the_exploit_payload_used_above_really_runs_code(tmp_path: Path) -> None:
    """Proof that the tamper test's payload is dangerous: unpickled, it creates a directory."""
    marker = tmp_path / "pwned"
    pickle.loads(b"cos\nmkdir\n(V" + str(marker).encode() + b"\ntR.")
    assert marker.is_dir()


async def test_an_older_snapshot_does_not_replace_a_newer_one(
    client: aioredis.Redis, settings: Settings
) -> None:
    """Versions only go up: a validly signed old snapshot put back as current (a replay by
    whoever can write Redis) is refused; a signed rollback (a new, higher version that says
    rollback_of) is the way back."""
    store = SnapshotStore(client, settings)
    v1 = await store.publish("risk", river_model(1))
    v2 = await store.publish("risk", river_model(2))
    w, worker = watcher(store, settings)
    assert await w.load_initial() == {"risk": v2}
    await client.set(store.keys("risk").current, v1)  # the pointer moved back to a signed v1
    assert await w.check("risk") is False
    assert w.active["risk"] == v2 and w.refused["risk"] == v1 and refused(w) == 1.0
    with pytest.raises(SnapshotRefused, match="older than the running"):
        await store.latest("risk", running=v2)
    await client.set(store.keys("risk").current, v2)
    v3 = await store.rollback("risk", v1)
    assert (
        SnapshotVersion.parse(v3).number == 3
        and SnapshotVersion.parse(v3).digest == SnapshotVersion.parse(v1).digest
    )
    assert await w.check("risk") is True and w.active["risk"] == v3
    assert same_predictions(worker.models["risk"][1], river_model(1))


def test_beacon_models_rollback_publishes_a_signed_rollback(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from engine.cli.main import main

    async def publish_two() -> tuple[str, str]:
        client = connect(settings)
        try:
            store = SnapshotStore(client, settings)
            return await store.publish("risk", river_model(1)), await store.publish("risk", river_model(2))
        finally:
            await client.aclose()

    v1, _ = asyncio.run(publish_two())
    for var, value in {
        "BEACON_REDIS_URL": settings.redis_url,
        "BEACON_KEY_PREFIX": settings.key_prefix,
        "BEACON_SIGNING_KEY_FILE": settings.signing_key_file,
        "BEACON_SIGNING_PUBLIC_KEYS": settings.signing_public_keys,
    }.items():
        monkeypatch.setenv(var, value)
    assert main(["models", "rollback", "risk", v1]) == 0
    assert f"(rollback_of {v1}) published" in capsys.readouterr().out

    async def current() -> tuple[str, object, dict[str, Any]] | None:
        client = connect(settings)
        try:
            return await SnapshotStore(client, settings).latest("risk", running=v1.replace("-v1-", "-v2-"))
        finally:
            await client.aclose()

    loaded = asyncio.run(current())
    assert loaded is not None and SnapshotVersion.parse(loaded[0]).number == 3
