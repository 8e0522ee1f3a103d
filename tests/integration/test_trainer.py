"""The trainer's label rules against a real Redis (no broker: records are handed in as
the Kafka loop would): answered, ignored and late-corrected offers; fraud at any delay
and matured legitimate transactions; churn by closure and by dormancy; nothing learned
twice on redelivery; labels that arrive before their decision wait for it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from engine.domain.decision import decision_id_of, legacy_decision_id_of
from engine.service.trainer import Trainer
from engine.settings import Settings
from engine.store.feedback import FeedbackStore
from engine.store.redisio import connect
from models.learner import Learner
from models.registry import REGISTRY, build
from tests.helpers import isolated, signing_keys

pytestmark = pytest.mark.integration
DAY = 86400.0
T0 = 1_790_000_000.0


@pytest.fixture
async def trainer(infra: Settings) -> AsyncIterator[Trainer]:
    s = isolated(infra, offer_response_window_s=DAY, fraud_maturity_s=30 * DAY, churn_horizon_s=60 * DAY)
    client = connect(s)
    learner = Learner({n: build(n) for n in REGISTRY}, {n: REGISTRY[n].features for n in REGISTRY})
    yield Trainer(s, learner, FeedbackStore(client, s.key_prefix, s.feedback_ttl_s))
    await client.aclose()


def audit(
    event_id: str, ts: float, customer: str = "c1", etype: str = "transfer", shown: tuple[str, ...] = ()
) -> dict[str, Any]:
    return {
        "decision_id": decision_id_of(customer, "mobile", event_id),
        "customer_id": customer,
        "actions": [{"id": a, "kind": "offer"} for a in shown],
        "features": {"log_amount": 5.0, "segment": "mass", "channel": "mobile", "type": etype, "n_30d": 4},
        "event": {"event_id": event_id, "ts": ts, "type": etype, "channel": "mobile", "attributes": {}},
    }


def offer_label(event_id: str, action: str, response: str, ts: float) -> dict[str, Any]:
    return {"kind": "offer", "decision_id": decision_id_of("c1", "mobile", event_id), "action_id": action,
            "label": response == "accepted", "response": response, "customer_id": "c1", "ts": ts}  # fmt: skip


def fraud_label(event_id: str, ts: float) -> dict[str, Any]:
    return {
        "kind": "fraud",
        "event_id": event_id,
        "channel": "mobile",
        "label": True,
        "customer_id": "c1",
        "ts": ts,
    }


def labels(t: Trainer, name: str) -> tuple[int, int]:
    q = t.learner.quality[name].summary()
    return q["labels"], q["positives"]


async def test_offer_answered_ignored_and_late_acceptance_corrected(trainer: Trainer) -> None:
    await trainer.on_audit(audit("e1", T0, shown=("gold", "savings")))
    await trainer.on_label(offer_label("e1", "gold", "declined", T0 + 60))
    await trainer.on_label(offer_label("e1", "gold", "declined", T0 + 60))  # redelivered: learned once
    assert labels(trainer, "offers") == (1, 0)
    await trainer.on_audit(audit("e2", T0 + 2 * DAY))  # stream time passes the answer window
    await trainer.sweep()
    assert labels(trainer, "offers") == (2, 0)  # savings: ignored, a negative
    await trainer.on_label(offer_label("e1", "savings", "accepted", T0 + 3 * DAY))
    assert labels(trainer, "offers") == (3, 1) and trainer.learner.corrections == 1
    await trainer.on_label(offer_label("e1", "mortgage", "accepted", T0 + 3 * DAY))  # never shown
    assert labels(trainer, "offers") == (3, 1) and trainer.unmatched == 1


async def test_fraud_at_any_delay_and_legitimate_after_maturity(trainer: Trainer) -> None:
    await trainer.on_audit(audit("t1", T0))
    await trainer.on_audit(audit("t2", T0 + 10))
    await trainer.on_label(fraud_label("t1", T0 + 20 * DAY))  # reported 20 days later
    assert labels(trainer, "fraud") == (1, 1)
    assert trainer.learner.quality["fraud"].summary()["label_delay_s"]["mean"] == pytest.approx(20 * DAY)
    await trainer.on_audit(audit("t3", T0 + 31 * DAY, customer="c2"))
    await trainer.sweep()
    assert labels(trainer, "fraud") == (2, 1)  # t2: no report in 30 days, legitimate
    assert labels(trainer, "fraud_challenger") == labels(trainer, "fraud")


async def test_a_fraud_report_finds_a_decision_made_under_the_old_ids(trainer: Trainer) -> None:
    """Decisions made before ids included the customer are still joined to their reports."""
    await trainer.on_audit({**audit("old", T0), "decision_id": legacy_decision_id_of("mobile", "old")})
    await trainer.on_label(fraud_label("old", T0 + DAY))
    assert labels(trainer, "fraud") == (1, 1)


async def test_a_label_before_its_decision_waits_for_it(trainer: Trainer) -> None:
    await trainer.on_label(fraud_label("late", T0))
    assert labels(trainer, "fraud") == (0, 0)
    await trainer.on_audit(audit("late", T0 - 5))
    await trainer.on_audit(audit("x", T0 + 3600, customer="c9"))  # stream time moves on
    await trainer.sweep()
    assert labels(trainer, "fraud") == (1, 1)


async def test_churn_by_closure_by_dormancy_and_not_on_return(trainer: Trainer) -> None:
    await trainer.on_audit(audit("a1", T0, customer="stay", etype="login"))
    await trainer.on_audit(audit("a2", T0 + 2 * DAY, customer="stay", etype="login"))
    assert labels(trainer, "churn") == (1, 0)  # came back within the horizon
    await trainer.on_audit(audit("b1", T0, customer="closer", etype="login"))
    await trainer.on_label({"kind": "churn", "label": True, "customer_id": "closer", "ts": T0 + DAY})
    assert labels(trainer, "churn") == (2, 1)
    await trainer.on_audit(audit("z", T0 + 90 * DAY, customer="other", etype="login"))
    await trainer.sweep()
    # "stay" went quiet after a2 for more than the horizon: dormant, a positive. "closer"
    # was already labelled by the closure, so dormancy does not count it again.
    assert labels(trainer, "churn") == (3, 2)


async def test_a_second_trainer_cannot_fork_the_models(infra: Settings) -> None:
    from engine.store.snapshots import SnapshotStore
    from models.errors import SnapshotConflict

    s = isolated(infra, **signing_keys())
    client = connect(s)

    def trainer() -> Trainer:
        learner = Learner({n: build(n) for n in REGISTRY}, {n: REGISTRY[n].features for n in REGISTRY})
        return Trainer(
            s, learner, FeedbackStore(client, s.key_prefix, s.feedback_ttl_s), SnapshotStore(client, s)
        )

    first, second = trainer(), trainer()
    for t in (first, second):
        await t.on_audit(audit("f1", T0))
        await t.on_label(fraud_label("f1", T0 + 60)) if t is first else None
    await first.maybe_snapshot(force=True)
    assert first.versions["fraud"].startswith("fraud-v1-")
    second.learner.learn("fraud", {"log_amount": 1.0}, {}, True)  # learned apart from the first
    with pytest.raises(SnapshotConflict):
        await second.maybe_snapshot(force=True)
    await client.aclose()
