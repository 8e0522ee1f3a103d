"""Label poisoning through the trainer and a real Redis (issue 17, finding 7).

Before: a ``fraud_report`` could name another customer's transaction (decisions kept
under the id they had before 2026-12-03 carry no customer), a customer's own report could
overturn what a risk officer had decided, and alternating reports were each learned again
(every flip a "correction"). Now a label must come from the decision's customer, one
verdict is kept per transaction, and only a stronger source changes it: a risk officer's
disposition over a chargeback over the customer's own report. Who sent each label is
recorded and counted (``beacon_trainer_fraud_labels_total{source,outcome}``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from engine.domain.decision import legacy_decision_id_of
from engine.domain.events import Event
from engine.domain.labels import label_of
from engine.service.trainer import Trainer
from engine.settings import Settings
from engine.store.feedback import FeedbackStore
from engine.store.redisio import connect
from models.learner import Learner
from models.registry import REGISTRY, build
from models.trainer_metrics import TrainerMetrics
from tests.helpers import isolated
from tests.integration.test_fraud_labels import T0, audit, one_payment

pytestmark = pytest.mark.integration


@pytest.fixture
async def trainer(infra: Settings) -> AsyncIterator[Trainer]:
    s = isolated(infra)
    client = connect(s)
    learner = Learner({n: build(n) for n in REGISTRY}, {n: REGISTRY[n].features for n in REGISTRY})
    t = Trainer(s, learner, FeedbackStore(client, s.key_prefix, s.feedback_ttl_s))
    t.metrics = TrainerMetrics(CollectorRegistry())
    yield t
    await client.aclose()


def reported(
    customer: str, ref: str, *, kind: str = "fraud_report", legit: bool = False, n: int = 0
) -> dict[str, Any]:
    """The feedback record of a report event, as the worker makes it (engine.domain.labels)."""
    attributes: dict[str, Any] = {"ref_event_id": ref, "ref_channel": "mobile"}
    if legit:
        attributes["legitimate"] = True
    event = Event(f"r{n}-{kind}-{legit}", customer, "mobile", kind, T0 + 60 + n, attributes=attributes)
    label = label_of(event)
    assert label is not None
    return label


def disposition(customer: str, ref: str, fraud: bool) -> dict[str, Any]:
    """As engine.store.alerts.labels_of makes it when an officer resolves an alert."""
    return {"kind": "fraud", "event_id": ref, "channel": "mobile", "label": fraud,
            "customer_id": customer, "ts": T0 + 500, "source": "disposition"}  # fmt: skip


def fraud_model(t: Trainer) -> tuple[int, int]:
    m = t.learner.models["fraud"]
    return m.n_labels, m.n_positive


def counted(t: Trainer, source: str, outcome: str) -> float:
    assert t.metrics is not None
    return t.metrics.fraud_labels.labels(source, outcome)._value.get()  # type: ignore[attr-defined]


async def test_a_report_about_another_customers_transaction_is_not_learned(trainer: Trainer) -> None:
    p = one_payment(1, T0)  # customer c1's payment, decided under the legacy id (no customer in it)
    record = {**audit(p), "decision_id": legacy_decision_id_of(p.channel, "e1")}
    await trainer.on_audit(record)
    await trainer.on_label(reported("c2", "e1"))  # customer c2 reports c1's transaction
    assert fraud_model(trainer) == (0, 0)
    assert trainer.unmatched_by.get(("fraud", "other_customer")) == 1
    assert counted(trainer, "customer_report", "other_customer") == 1


async def test_distinct_reports_of_one_transaction_are_learned_once(trainer: Trainer) -> None:
    p = one_payment(1, T0)
    await trainer.on_audit(audit(p))
    for n in range(5):  # five distinct reports (ids, times) of the same transaction
        await trainer.on_label(reported("c1", "e1", n=n))
    assert fraud_model(trainer) == (1, 1)
    assert counted(trainer, "customer_report", "learned") == 1
    assert counted(trainer, "customer_report", "repeat") == 4


async def test_flip_flopping_reports_do_not_retrain_and_only_a_stronger_source_overturns(
    trainer: Trainer,
) -> None:
    p = one_payment(1, T0)
    await trainer.on_audit(audit(p))
    await trainer.on_label(reported("c1", "e1", n=0))  # the customer: fraud
    for n in range(1, 5):  # then alternately "it was me" and "fraud": each was a correction before
        await trainer.on_label(reported("c1", "e1", legit=n % 2 == 1, n=n))
    assert fraud_model(trainer) == (1, 1) and trainer.learner.fraud_corrections == 0
    assert counted(trainer, "customer_report", "contested") == 2
    await trainer.on_label(disposition("c1", "e1", fraud=False))  # an officer: legitimate
    assert fraud_model(trainer) == (1, 0) and trainer.learner.fraud_corrections == 1
    await trainer.on_label(reported("c1", "e1", kind="chargeback", n=9))  # weaker than the officer
    await trainer.on_label(reported("c1", "e1", n=10))
    assert fraud_model(trainer) == (1, 0) and trainer.learner.fraud_corrections == 1
    assert counted(trainer, "chargeback", "outranked") == 1
    assert counted(trainer, "customer_report", "outranked") == 1


async def test_a_label_records_who_sent_it() -> None:
    label = reported("c1", "e1", kind="chargeback")
    assert (label["source"], label["by"], label["report_id"]) == (
        "chargeback",
        "mobile",
        "r0-chargeback-False",
    )
    assert reported("c1", "e1")["source"] == "customer_report"
