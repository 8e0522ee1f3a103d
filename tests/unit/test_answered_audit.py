"""Issue 14: the degraded answer a channel received is audited as such, and the stateful
decision made later names it (agents/app.py wiring, no servers)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import orjson

from agents.app import AnsweredIds, _answered_republisher
from engine.decide.degraded import ANSWERED_HEADER, decide_without_state
from engine.decide.pipeline import DecisionPolicy, decide
from engine.domain.events import Event
from engine.domain.scoring import BuiltinScorer
from engine.domain.state import Snapshot
from engine.service.decisions import Outcome
from engine.service.trainer import Trainer
from engine.settings import Settings
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


def test_an_orphan_decision_names_the_degraded_answer_it_follows() -> None:
    answered = AnsweredIds(bound=2)
    stateful = decide(EVENT, Snapshot(windows={}), RULES, BuiltinScorer(), DecisionPolicy())
    outcome = Outcome(EVENT, b"{}", stateful)
    assert answered.followed(outcome) is outcome  # no degraded answer given: nothing to name
    answered.add(stateful.decision_id)
    marked = answered.followed(outcome).decision
    assert marked is not None and marked.explain()["answered_degraded"] == stateful.decision_id
    assert answered.followed(outcome) is outcome  # named once
    for did in ("a", "b", stateful.decision_id, "c", "d"):
        answered.add(did)
    assert answered.followed(outcome) is outcome  # bounded: the oldest are forgotten


def test_the_trainer_does_not_learn_from_a_degraded_audit_record() -> None:
    class NoFeedback:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"the trainer touched its ledger ({name}) for a degraded record")

    trainer = Trainer(Settings(), SimpleNamespace(models={}), NoFeedback())  # type: ignore[arg-type]
    asyncio.run(trainer.on_audit(orjson.loads(_degraded().audit_bytes())))
    assert trainer.clock == 0.0
