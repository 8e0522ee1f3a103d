"""What the trainer keeps of each decision (issue 16's memory budget): a decision's inputs
stay in Redis only while a label can still reach them (FeedbackKeys' docstring has the
rule), compressed; every kind of label is still learned, one record at a time and in
batches."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from engine.domain.decision import decision_id_of
from engine.service.trainer import Trainer
from engine.settings import Settings
from engine.store.feedback import FeedbackStore
from engine.store.redisio import connect
from models.learner import Learner
from models.registry import REGISTRY, build
from tests.helpers import isolated

pytestmark = pytest.mark.integration
DAY = 86400.0
T0 = 1_790_000_000.0

# A decision's features as a worker computes them (every key the built-in models read).
FEATURES = {
    "type": "page_view", "channel": "internet", "secs_since_login": -1.0, "complaints_7d": 0,
    "log_amount": 0.0, "home_distance_km": -1.0, "secs_since_new_device": -1.0, "new_device": 0,
    "n_1h": 1, "pin_failures_1h": 0, "n_10m_type": 1, "income_band": "upper_middle",
    "channel_switch": 0, "secs_since_password_reset": -1.0, "device_customers_24h": 1,
    "contacts_7d": 0, "known_devices": 0, "amt_30d": 0.0, "night": 1, "terminal_changed": 0,
    "amount_ratio_30d": 0.0, "n_30d": 1, "kyc_risk": "low", "seconds_since_last": 318245.6012,
    "segment": "affluent", "age_band": "60+", "hour": 5, "n_30d_channel": 1, "n_7d": 1,
    "n_10m": 1, "weekday": 4, "speed_kmh": -1.0,
}  # fmt: skip


@pytest.fixture
async def trainer(infra: Settings) -> AsyncIterator[Trainer]:
    s = isolated(infra, offer_response_window_s=DAY, fraud_maturity_s=2 * 3600.0, churn_horizon_s=60 * DAY)
    client = connect(s)
    learner = Learner({n: build(n) for n in REGISTRY}, {n: REGISTRY[n].features for n in REGISTRY})
    yield Trainer(s, learner, FeedbackStore(client, s.key_prefix, s.feedback_ttl_s))
    await client.aclose()


def audit(event_id: str, ts: float, etype: str, customer: str = "c1", shown: tuple[str, ...] = (),
          alerts: tuple[str, ...] = ()) -> dict[str, Any]:  # fmt: skip
    return {
        "decision_id": decision_id_of(customer, "mobile", event_id),
        "customer_id": customer,
        "actions": [{"id": a, "kind": "offer"} for a in shown],
        "alerts": [{"rule_id": r} for r in alerts],
        "features": {**FEATURES, "type": etype, "channel": "mobile"},
        "scores": {
            "fraud": 0.004496273160941178,
            "churn": 0.3775406687981454,
            "offer": {a: 0.0123456789 for a in shown},
        },
        "event": {"event_id": event_id, "ts": ts, "type": etype, "channel": "mobile", "attributes": {}},
    }


def did(event_id: str, customer: str = "c1") -> str:
    return decision_id_of(customer, "mobile", event_id)


async def kept(t: Trainer, event_id: str, customer: str = "c1") -> int:
    """MEMORY USAGE of the decision's inputs key, 0 if none is kept."""
    store = t.fb
    assert isinstance(store, FeedbackStore)
    return int(await store._r.memory_usage(store.keys.inputs(did(event_id, customer)), samples=0) or 0)


def labels(t: Trainer, name: str) -> tuple[int, int]:
    q = t.learner.quality[name].summary()
    return q["labels"], q["positives"]


async def feed(t: Trainer, batched: bool, *records: tuple[str, dict[str, Any]]) -> None:
    if batched:
        await t.on_batch(list(records))
    else:
        for kind, body in records:
            await (t.on_audit(body) if kind == "audit" else t.on_label(body))


async def test_no_inputs_kept_for_a_decision_no_label_can_reach(trainer: Trainer) -> None:
    """A balance inquiry that showed nothing and raised nothing: only churn can reach it,
    and only while it is the customer's latest decision."""
    await trainer.on_audit(audit("q1", T0, "balance_inquiry"))
    await trainer.on_audit(audit("t1", T0 + 60, "transfer"))  # q1 is no longer the latest
    await trainer.on_audit(audit("q2", T0 + 120, "login", shown=("gold",)))
    await trainer.on_audit(audit("p1", T0 + 180, "pin_failure", alerts=("pin_bruteforce",)))
    await trainer.on_audit(audit("q3", T0 + 240, "page_view"))
    bytes_ = {e: await kept(trainer, e) for e in ("q1", "t1", "q2", "p1", "q3")}
    print("MEMORY USAGE of fb:x per decision:", bytes_)
    assert bytes_["q1"] == 0  # no label can reach it
    assert bytes_["q3"] == 0  # the latest: kept with the customer's latest decision instead
    for reachable in ("t1", "q2", "p1"):  # a transaction, offers shown, an alert raised
        assert 0 < bytes_[reachable] <= 400  # ~880 bytes as plain JSON


async def test_a_record_written_before_compression_is_still_read(trainer: Trainer) -> None:
    store = trainer.fb
    assert isinstance(store, FeedbackStore)
    x = {"f": {"n_30d": 3}, "a": {}, "ts": T0, "type": "transfer", "customer_id": "c1", "shown": []}
    await store._r.set(store.keys.inputs("old"), orjson.dumps(x))
    await store._r.set(store.keys.last("c1"), orjson.dumps({"d": "old", "ts": T0, "lab": 0.0}))
    assert await store.recall("old") == x
    assert await store.recall_many(["old"]) == {"old": x}
    assert await store.last_of("c1") == {"d": "old", "ts": T0, "lab": 0.0}
    await trainer.on_audit(audit("n1", T0 + 2 * DAY, "login"))  # came back: churn learns on "old"
    assert labels(trainer, "churn") == (1, 0)


@pytest.mark.parametrize("batched", [False, True], ids=["one_by_one", "batched"])
async def test_every_label_kind_still_learns(trainer: Trainer, batched: bool) -> None:
    a, lab = "audit", "label"
    offer = {"kind": "offer", "customer_id": "c1"}
    fraud = {"kind": "fraud", "channel": "mobile", "customer_id": "c1"}
    await feed(trainer, batched,
        (a, audit("o1", T0, "page_view", shown=("gold", "savings", "loan"))),
        (a, audit("t1", T0 + 10, "transfer")),  # reported before maturity
        (a, audit("t2", T0 + 20, "card_payment")),  # matures, then reported: a correction
        (a, audit("t3", T0 + 30, "withdrawal")),  # confirmed legitimate
        (a, audit("p1", T0 + 40, "pin_failure", alerts=("pin_bruteforce",))),  # dispositioned
        (a, audit("q1", T0 + 50, "balance_inquiry")),  # the latest for a while
        (lab, {**offer, "decision_id": did("o1"), "action_id": "gold", "label": True, "ts": T0 + 60}),
        (lab, {**offer, "decision_id": did("o1"), "action_id": "loan", "label": False, "ts": T0 + 60}),
        (lab, {**fraud, "event_id": "t1", "label": True, "ts": T0 + 600}),
        (lab, {**fraud, "event_id": "p1", "label": True, "ts": T0 + 700, "source": "disposition"}),
    )  # fmt: skip
    assert labels(trainer, "offers") == (2, 1)
    assert labels(trainer, "fraud") == (2, 2)
    # Churn learned "came back" on o1 when t1 came (one such label a day). The customer
    # comes back two days on (q1 was the latest: churn learns "came back" from it), past
    # the offer window and fraud maturity: savings ignored, t2 and t3 legitimate.
    await feed(trainer, batched, (a, audit("q2", T0 + 2 * DAY, "balance_inquiry")))
    if not batched:
        await trainer.sweep()
    assert labels(trainer, "churn") == (2, 0)
    assert labels(trainer, "offers") == (3, 1)
    assert labels(trainer, "fraud") == (4, 2)
    assert await kept(trainer, "q1") == 0  # no longer anyone's latest: nothing kept
    await feed(
        trainer,
        batched,
        (lab, {**offer, "decision_id": did("o1"), "action_id": "savings", "label": True, "ts": T0 + 3 * DAY}),
        (lab, {**fraud, "event_id": "t2", "label": True, "ts": T0 + 20 * DAY}),  # late: turned over
        (lab, {**fraud, "event_id": "t3", "label": False, "ts": T0 + 20 * DAY}),  # confirmed: no change
        (
            lab,
            {
                "kind": "fraud",
                "channel": "mobile",
                "customer_id": "c2",
                "event_id": "t9",
                "label": True,
                "ts": T0 + 20 * DAY,
            },
        ),  # another customer's transaction: not c1's
    )
    assert labels(trainer, "offers") == (4, 2) and trainer.learner.corrections == 1
    assert labels(trainer, "fraud") == (5, 3) and trainer.learner.fraud_corrections == 1
    assert labels(trainer, "fraud_challenger") == labels(trainer, "fraud")
    # Dormancy: q2 stays the latest past the horizon; a closure labels another customer's.
    await feed(trainer, batched,
        (a, audit("r1", T0 + 20 * DAY, "login", customer="c2")),
        (lab, {"kind": "churn", "label": True, "customer_id": "c2", "ts": T0 + 21 * DAY}),
        (a, audit("z1", T0 + 70 * DAY, "page_view", customer="c3")),
    )  # fmt: skip
    if not batched:
        await trainer.sweep()
    assert labels(trainer, "churn") == (4, 2)
    served = trainer.report()["fraud"]["served"]
    assert served["labels"] == 4  # as before the retention rule: scores kept with the inputs
