"""Issue 14: the degraded answer a channel received is audited as such, and the stateful
decision made later names it (agents/app.py wiring, no servers)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import orjson

from agents.app import AnsweredIds, _answered_republisher
from engine.decide.degraded import ANSWERED_HEADER, SALES_KINDS, decide_without_state
from engine.decide.pipeline import DecisionPolicy, decide
from engine.domain.events import Event
from engine.domain.scoring import BuiltinScorer
from engine.domain.state import Snapshot
from engine.service.decisions import DecisionService
from engine.service.trainer import Trainer
from engine.settings import Settings
from tests.fakes import FakeState
from tests.unit.rulefixture import fixture_rules

RULES = fixture_rules()
EVENT = Event("pin-3", "C1", "atm", "pin_failure", 1_795_428_000.0, terminal_id="T-1")


@dataclass
class Bulk:
    records: list[tuple[str, bytes | None, bytes, Any]] = field(default_factory=list)

    def publish(self, topic: str, key: bytes | None, value: bytes, headers: Any = None) -> None:
        self.records.append((topic, key, value, headers))


def _degraded() -> Any:
    return decide_without_state(EVENT, RULES, BuiltinScorer(), DecisionPolicy())


def test_the_degraded_answer_is_audited_before_its_event_is_republished() -> None:
    settings, bulk, answered = Settings(), Bulk(), AnsweredIds()
    decision = _degraded()
    _answered_republisher(bulk, SimpleNamespace(settings=settings), answered)(decision, b"raw")  # type: ignore[arg-type]
    (audit_topic, key, value, _), (topic, key2, raw, headers) = bulk.records
    assert audit_topic == settings.topic("decisions.audit") and key == key2 == b"C1"
    record = orjson.loads(value)
    assert record["degraded"] is True and record["decision_id"] == decision.decision_id
    assert record["risk"]["verdict"] == "block" == decision.risk.verdict  # the fixture's pin_failure floor
    assert record["explain"]["state_unavailable"] == "block"
    assert (topic, raw, headers) == (
        settings.topic("interactions"),
        b"raw",
        [(ANSWERED_HEADER, decision.decision_id.encode())],
    )


def test_answered_ids_are_taken_once_and_bounded() -> None:
    answered = AnsweredIds(bound=2)
    assert not answered.take("a")  # no degraded answer given: nothing to name
    answered.add("a")
    assert answered.take("a") and not answered.take("a")  # named once
    for did in ("a", "b", "c", "d"):
        answered.add(did)
    assert not answered.take("a") and answered.take("d")  # bounded: the oldest are forgotten


async def test_an_orphan_decision_is_committed_naming_the_degraded_answer_it_follows() -> None:
    """The HTTP caller got the degraded answer before the batch reached the commit: the
    decision committed (and audited through the outbox) says so and shows no sales offer."""
    settings = Settings(auth_required=False)
    service = DecisionService(settings, FakeState(), RULES, BuiltinScorer())
    answered = AnsweredIds()
    service.answered_degraded = answered.take
    login = Event("lg-1", "C9", "mobile", "login", 1_795_428_000.0)
    expected = decide(login, Snapshot(windows={}), RULES, BuiltinScorer(), DecisionPolicy())
    answered.add(expected.decision_id)
    (outcome,) = await service.decide_batch([login])
    assert outcome.decision is not None
    assert outcome.decision.explain()["answered_degraded"] == expected.decision_id
    assert not any(a.kind in SALES_KINDS for a in outcome.decision.actions)
    (again,) = await service.decide_batch([Event("lg-2", "C9", "mobile", "login", 1_795_428_001.0)])
    assert again.decision is not None and "answered_degraded" not in again.decision.explain()


def test_the_trainer_does_not_learn_from_a_degraded_audit_record() -> None:
    class NoFeedback:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"the trainer touched its ledger ({name}) for a degraded record")

    trainer = Trainer(Settings(), SimpleNamespace(models={}), NoFeedback())  # type: ignore[arg-type]
    asyncio.run(trainer.on_audit(orjson.loads(_degraded().audit_bytes())))
    assert trainer.clock == 0.0
