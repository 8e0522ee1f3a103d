"""``beacon models report`` over the scores the channels received (issue 15 item 9): the
score each decision carried, joined with its label when the label arrives, over a window
of positives, with the trainer's lag."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from engine.ops.launcher import running_trainer, running_worker
from engine.service.trainer import Trainer
from engine.service.trainreport import quality_report
from engine.settings import Settings
from engine.store.feedback import FeedbackStore
from engine.store.redisio import connect
from models.learner import Learner
from models.registry import REGISTRY, build
from tests.helpers import isolated
from tests.integration.test_trainer import DAY, T0, audit, fraud_label

pytestmark = pytest.mark.integration


def scored(event_id: str, ts: float, fraud: float, customer: str) -> dict[str, Any]:
    body = audit(event_id, ts, customer=customer)
    return {
        **body,
        "scores": {"fraud": fraud, "churn": 0.1, "offer": {}, "shadow": {"fraud_challenger": 0.5}},
    }


async def test_the_report_measures_the_scores_the_channels_got(infra: Settings) -> None:
    """Every decision carried a score that ranks its label right (0.9 for the frauds,
    0.2 for the rest); the trainer's own model sees the same features every time and
    cannot rank. The report shows the decided scores' AUC (1.000) where the current
    model's is not, the challenger's constant decided score at chance, and the lag."""
    s = isolated(infra, fraud_maturity_s=DAY)
    client = connect(s)
    learner = Learner({n: build(n) for n in REGISTRY}, {n: REGISTRY[n].features for n in REGISTRY})
    trainer = Trainer(s, learner, FeedbackStore(client, s.key_prefix, s.feedback_ttl_s))
    for i in range(120):
        fraud = i % 3 == 0
        await trainer.on_audit(scored(f"t{i}", T0 + i, 0.9 if fraud else 0.2, customer=f"c{i}"))
        if fraud:
            await trainer.on_label({**fraud_label(f"t{i}", T0 + i + 60), "customer_id": f"c{i}"})
    await trainer.on_audit(scored("later", T0 + 2 * DAY, 0.2, customer="z"))  # the rest mature
    await trainer.sweep()
    trainer.lag = {"labels": 15_000, "seconds": 42.0}
    await trainer.maybe_snapshot(force=True)
    text = await quality_report(s, client)
    await client.aclose()

    assert text is not None
    served, _, current = text.partition("The trainer's current model")
    fraud_served = next(line for line in served.splitlines() if line.startswith("fraud "))
    assert fraud_served.split()[1:4] == ["120", "120", "40"]  # labels, window, positives
    assert fraud_served.split()[5:7] == ["1.000", "1.000"]  # ROC AUC, PR AUC of what was decided
    fraud_now = next(line for line in current.splitlines() if line.startswith("fraud "))
    assert "1.000" not in fraud_now  # the trainer's current model ranks nothing
    challenger = next(line for line in served.splitlines() if line.startswith("fraud_challenger"))
    assert challenger.split()[5:7] == ["0.500", "0.333"]  # a constant decided score: chance
    assert "trainer lag: 15,000 labels and 42.0s behind" in served


def _transfer_and_report(i: int, now: float) -> list[dict[str, Any]]:
    customer = f"behind-{i}"
    transfer = {"event_id": f"B{i}", "customer_id": customer, "channel": "mobile", "type": "transfer",
                "ts": now + i * 0.01, "amount": 120.0, "device_id": "mule-phone"}  # fmt: skip
    report = {"event_id": f"BR{i}", "customer_id": customer, "channel": "call_centre", "type": "fraud_report",
              "ts": now + 1 + i * 0.01, "attributes": {"ref_event_id": f"B{i}", "ref_channel": "mobile"}}  # fmt: skip
    return [transfer, report]


def _positives(s: Settings) -> int:
    async def read() -> int:
        client = connect(s)
        try:
            return int((await FeedbackStore(client, s.key_prefix, s.feedback_ttl_s).load_quality())
                       .get("fraud", {}).get("positives", 0))  # fmt: skip
        finally:
            await client.aclose()

    return asyncio.run(read())


def _settled(s: Settings, wait_s: float) -> str:
    async def read() -> str:
        client = connect(s)
        try:
            return await quality_report(s, client, settle_s=wait_s) or ""
        finally:
            await client.aclose()

    return asyncio.run(read())


def test_a_settled_report_waits_for_a_trainer_that_is_behind(infra: Settings, tmp_path: Path) -> None:
    """The replay's report (``--report``) once used to call the trainer settled when its label
    counts stood still for three polls: a trainer paused (a slow CI machine, a rebalance,
    the pacer holding a partition) looked settled, and the report described 8 frauds of 52.
    Settled now means nothing left in the outbox, the trainer's group committed to the end
    of both its topics, and the counts still; short of that the report says how far behind."""
    s = isolated(infra, snapshot_interval_s=1.0, fraud_maturity_s=3600.0)
    now = time.time()
    with (
        running_worker(s, tmp_path) as worker,
        running_trainer(s, tmp_path) as trainer,
        httpx.Client(base_url=worker.url, timeout=10) as http,
    ):
        for body in _transfer_and_report(0, now):
            assert http.post("/v1/decisions", content=orjson.dumps(body)).status_code == 200
        deadline = time.monotonic() + 60
        while _positives(s) < 1 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _positives(s) == 1
        os.kill(trainer.proc.pid, signal.SIGSTOP)  # the trainer falls behind
        try:
            for i in range(1, 21):
                for body in _transfer_and_report(i, now):
                    assert http.post("/v1/decisions", content=orjson.dumps(body)).status_code == 200
            paused = _settled(s, 6.0)
        finally:
            os.kill(trainer.proc.pid, signal.SIGCONT)
        assert "not caught up" in paused, paused
        assert _positives(s) == 1
        settled = _settled(s, 120.0)
    assert "not caught up" not in settled, settled
    assert _positives(s) == 21
