"""Hot-reload logic with a fake rule store: what is swapped, refused, counted, and
what the HTTP API answers before any rules are loaded (no I/O)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.domain.scoring import BuiltinScorer
from engine.http.api import Api
from engine.rules.pack import RulePackError
from engine.service.decisions import DecisionService
from engine.service.metrics import Metrics
from engine.service.rulewatch import RuleWatcher, compile_version
from engine.settings import Settings
from engine.store.keys import RuleKeys
from tests.fakes import FakeRuleStore, FakeState
from tests.rulebundles import broken, bundle, version_of, write


def watcher(
    tmp_path: Path, local: dict[str, str] | None = None
) -> tuple[RuleWatcher, FakeRuleStore, Metrics]:
    s = Settings.build(env={}, rules_dir=str(write(tmp_path, local or bundle("local"))), rules_poll_s=0.01)
    store, metrics = FakeRuleStore(), Metrics()
    service = DecisionService(s, FakeState(), None, BuiltinScorer(), metrics)
    readiness = {"redis": True, "broker": True, "rules": False}
    return RuleWatcher(store, service, s, metrics, readiness), store, metrics


def failures(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("beacon_rules_reload_failures_total")


async def test_first_load_seeds_from_the_rules_folder(tmp_path: Path) -> None:
    w, store, metrics = watcher(tmp_path)
    assert not w.readiness["rules"] and not w.loaded.is_set()
    await w.load_initial()
    seeded = version_of(1, bundle("local"))
    assert store.pointer == seeded and w.active == seeded
    assert w.service.rules is not None and w.service.rules.version == seeded
    assert w.readiness["rules"] and w.loaded.is_set()
    assert metrics.registry.get_sample_value("beacon_build_info", {"version": "0.1.0", "rules": seeded}) == 1


async def test_a_refused_version_is_counted_once_and_the_running_one_stays(tmp_path: Path) -> None:
    w, store, metrics = watcher(tmp_path)
    await w.load_initial()
    running = w.service.rules
    bad = store.put(broken("bad"))
    assert [await w.check() for _ in range(3)] == [False, False, False]
    assert w.service.rules is running and w.refused == bad and failures(metrics) == 1.0
    assert store.reads == 2  # the refused version is not fetched and compiled again each poll
    good = store.put(bundle("good"))
    assert await w.check() is True and w.active == good and w.refused is None
    assert await w.check() is False  # nothing new


async def test_a_bundle_that_does_not_match_its_digest_is_refused(tmp_path: Path) -> None:
    w, store, metrics = watcher(tmp_path)
    await w.load_initial()
    forged = version_of(7, bundle("one"))
    store.versions[forged], store.pointer = bundle("two"), forged
    assert await w.check() is False and failures(metrics) == 1.0


def test_compile_version_checks_name_digest_and_rules() -> None:
    s = Settings.build(env={})
    files = bundle("x")
    assert compile_version(version_of(3, files), files, s).version == version_of(3, files)
    with pytest.raises(RulePackError, match="not a rules version"):
        compile_version("local", files, s)
    with pytest.raises(RulePackError, match="do not match"):
        compile_version(version_of(3, bundle("y")), files, s)
    with pytest.raises(RulePackError, match=r"risk\.yaml: rule marker_z: severity"):
        compile_version(version_of(3, broken("z")), broken("z"), s)


async def test_invalid_local_packs_are_not_seeded(tmp_path: Path) -> None:
    w, store, _ = watcher(tmp_path, broken("local"))
    for _ in range(3):
        await w.check()
        await w._seed()
    assert store.pointer is None and w.service.rules is None and not w.readiness["rules"]


async def test_http_answers_503_until_rules_are_loaded() -> None:
    s = Settings.build(env={})
    service = DecisionService(s, FakeState(), None, BuiltinScorer())
    api = Api(service, Metrics(), lambda: {"redis": True, "broker": True, "rules": False})
    reply = await api.post_decision(b"{}")
    assert reply.status == 503 and b'"not_ready"' in reply.body and reply.headers == {"Retry-After": "1"}


def test_rule_keys_share_one_namespace_and_one_cluster_slot() -> None:
    keys = RuleKeys.of("bank1")
    assert all(k.startswith("bank1:rules:{bank1}:") for k in keys.writes())
    assert keys.channel == "bank1:rules:changed"
