"""Model hot swap with a fake snapshot store: what is installed, refused, counted and
shown in the metrics (no I/O)."""

from __future__ import annotations

import logging

import pytest

from engine.errors import StoreError
from engine.service.modelwatch import ModelWatcher
from engine.settings import Settings
from models.errors import SigningKeyError, SnapshotRefused, UnknownSnapshot
from models.metrics import ModelMetrics
from tests.fakes import FakeSnapshotStore


def make(
    names: tuple[str, ...] = ("risk", "churn"),
) -> tuple[ModelWatcher, FakeSnapshotStore, dict[str, object]]:
    store, installed = FakeSnapshotStore(), dict[str, object]()

    def install(name: str, version: str, model: object) -> None:
        if model == "reject me":
            raise ValueError("fails the model checks")
        installed[name] = (version, model)

    settings = Settings.build(env={}, model_poll_s=0.01)
    watcher = ModelWatcher(store, install, names, settings, ModelMetrics())
    return watcher, store, installed


def sample(w: ModelWatcher, name: str, metric: str = "beacon_model_snapshot_refused_total") -> float | None:
    return w.metrics.registry.get_sample_value(metric, {"model": name})


async def test_warm_start_installs_what_exists_and_counters_start_at_zero() -> None:
    w, store, installed = make()
    v1 = store.put("risk", 1, "risk model")
    assert await w.load_initial() == {"risk": v1} and w.loaded.is_set()
    assert installed == {"risk": (v1, "risk model")}  # churn has no snapshot: keeps its built-in model
    assert sample(w, "churn") == 0.0 and sample(w, "risk") == 0.0
    assert sample(w, "risk", "beacon_model_swaps_total") == 1.0
    assert (
        w.metrics.registry.get_sample_value("beacon_model_version_info", {"model": "risk", "version": v1})
        == 1
    )


async def test_a_refused_snapshot_is_counted_once_and_the_running_model_stays(
    caplog: pytest.LogCaptureFixture,
) -> None:
    w, store, installed = make()
    v1 = store.put("risk", 1, "good")
    await w.load_initial()
    v2 = store.put("risk", 2, SnapshotRefused("risk", "risk-v2-000000000002", "bad signature"))
    fetches = store.fetches
    with caplog.at_level(logging.ERROR, logger="beacon.models"):
        assert [await w.check("risk") for _ in range(3)] == [False, False, False]
    assert installed["risk"] == (v1, "good") and w.active["risk"] == v1 and w.refused["risk"] == v2
    assert sample(w, "risk") == 1.0 and store.fetches == fetches + 1  # not fetched again each poll
    assert [r.getMessage() for r in caplog.records] == [
        f"models: model risk: snapshot {v2} refused: bad signature; {v1} stays in force"
    ]
    v3 = store.put("risk", 3, "better")
    assert await w.check("risk") is True and installed["risk"] == (v3, "better") and "risk" not in w.refused


async def test_a_model_that_install_rejects_is_refused() -> None:
    w, store, installed = make()
    store.put("churn", 1, "reject me")
    await w.load_initial()
    assert installed == {} and sample(w, "churn") == 1.0 and "churn" not in w.active


async def test_the_version_info_keeps_only_the_active_version() -> None:
    w, store, _ = make(("risk",))
    versions = []
    for n in range(1, 6):
        versions.append(store.put("risk", n, f"model {n}"))
        assert await w.check_all() == ["risk"]
    series = [
        s.labels
        for metric in w.metrics.registry.collect()
        if metric.name == "beacon_model_version"
        for s in metric.samples
    ]
    assert series == [{"model": "risk", "version": versions[-1]}]
    assert sample(w, "risk", "beacon_model_swaps_total") == 5.0


async def test_no_key_or_no_redis_is_said_once_and_nothing_changes(caplog: pytest.LogCaptureFixture) -> None:
    w, store, installed = make()
    store.put("risk", 1, "m")
    store.fail = SigningKeyError("signing_public_keys is not set")
    with caplog.at_level(logging.WARNING, logger="beacon.models"):
        for _ in range(3):
            assert await w.check_all() == []
        store.fail = StoreError("connection refused")
        for _ in range(3):
            assert await w.check_all() == []
    assert [r.getMessage() for r in caplog.records] == [
        "models: signing_public_keys is not set; the running models stay",
        "models: cannot read snapshots from Redis (connection refused); the running models stay",
    ]
    assert installed == {} and sample(w, "risk") == 0.0
    store.fail = None
    assert await w.check_all() == ["risk"]


def test_model_names_are_checked_at_construction() -> None:
    with pytest.raises(UnknownSnapshot, match="not a model name"):
        make(("Risk-Model",))
