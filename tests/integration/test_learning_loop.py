"""The learning loop through the public API only: decisions and labels in over HTTP,
one trainer learning from them, two workers switching to the same signed snapshots."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from engine.launcher import WorkerProcess, running_trainer, settings_env, start_worker
from engine.settings import Settings
from tests.helpers import isolated

pytestmark = pytest.mark.integration
SEGMENTS = {"young": "savings_round_up", "affluent": "credit_card_gold"}
PROFILE = {"income_band": "high", "products": ["current", "debit_card"], "kyc_risk": "low"}


@pytest.fixture(scope="module")
def settings(infra: Settings) -> Settings:
    return isolated(
        infra,
        model_signing_key="test-signing-key-" + "x" * 16,
        model_poll_s=0.5,
        snapshot_every_labels=50,
        snapshot_interval_s=1.0,
        offer_response_window_s=3600.0,
        fraud_maturity_s=3600.0,
    )


@pytest.fixture(scope="module")
def workers(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[WorkerProcess]]:
    logs = tmp_path_factory.mktemp("learning")
    started = [start_worker(settings, logs)]
    started.append(start_worker(settings.replace(http_port=settings.http_port + 1), logs))
    try:
        with running_trainer(settings, logs):
            yield started
    finally:
        for w in started:
            w.stop()


def _event(i: int, customer: str, **kw: object) -> dict[str, object]:
    body: dict[str, object] = {"event_id": f"L{i}", "customer_id": customer, "channel": "mobile",
                               "type": "login", "ts": time.time()}  # fmt: skip
    body.update(kw)
    return body


def test_labels_in_snapshots_out_and_both_workers_agree(
    workers: list[WorkerProcess], settings: Settings
) -> None:
    rng = random.Random(3)
    clients = [httpx.Client(base_url=w.url, timeout=5) for w in workers]
    for seg in SEGMENTS:
        for c in range(150):
            profile = {"segment": seg, **PROFILE}
            clients[0].put(f"/v1/customers/{seg}-{c}/profile", content=orjson.dumps(profile))
    labels = 0
    for i in range(400):
        seg = rng.choice(list(SEGMENTS))
        customer = f"{seg}-{rng.randrange(150)}"
        r = clients[i % 2].post("/v1/decisions", content=orjson.dumps(_event(i, customer)))
        assert r.status_code == 200, r.text
        d = r.json()
        for action in d["actions"]:
            if action["kind"] == "fallback":
                continue
            accepted = rng.random() < (0.6 if action["id"] == SEGMENTS[seg] else 0.05)
            response = _event(100_000 + i * 10 + len(d["actions"]), customer, type="offer_response",
                              attributes={"decision_id": d["decision_id"], "action_id": action["id"],
                                          "response": "accepted" if accepted else "declined"})  # fmt: skip
            assert clients[0].post("/v1/decisions", content=orjson.dumps(response)).status_code == 200
            labels += 1
    assert labels >= 100, labels
    # Both workers switch to the trainer's snapshot of the offer model, and agree.
    deadline = time.monotonic() + 60
    versions: list[str] = []
    while time.monotonic() < deadline:
        probe = [c.post("/v1/decisions", content=orjson.dumps(_event(900_000 + n + int(time.time() * 1000) % 10**6,
                                                                      "young-0"))).json()
                 for n, c in enumerate(clients)]  # fmt: skip
        versions = [p["versions"]["models"]["offers"] for p in probe]
        if all(v != "offers-fresh" for v in versions) and len(set(versions)) == 1:
            break
        time.sleep(1.0)
    assert all(v.startswith("offers-v") for v in versions) and len(set(versions)) == 1, versions
    report = subprocess.run(
        [sys.executable, "-m", "engine.cli", "models", "report"],
        env=settings_env(settings), capture_output=True, text=True, timeout=60, cwd=Path(__file__).parents[2],
    )  # fmt: skip
    assert report.returncode == 0, report.stderr
    assert "offers" in report.stdout
    for c in clients:
        c.close()
