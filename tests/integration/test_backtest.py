"""Issue 18, item 2: a backtest of a planted rule change on audit records a real worker
wrote, read back from Kafka (signatures verified), against fraud labels from ``feedback``;
and a backtest of a model snapshot version, verified before it scores.

Customer k (k = 1..4) fails their PIN k times within ten minutes, so the n-th failure
reads ``pin_failures_1h == n``. The live pack blocks from the 3rd failure, the candidate
from the 2nd. By hand: live fires 0 + 0 + 1 + 2 = 3 times, the candidate 0 + 1 + 2 + 3 = 6;
3 ATM verdicts go from allow to block. Fraud reports label P3's 3rd and P4's 2nd
failure: live precision 1/3 and recall 1/2, the candidate 2/6 and 2/2.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from engine.ops.launcher import WorkerProcess, isolated, running_worker, settings_env
from engine.service.auditlog import read_audit
from engine.service.backtest import Request, run
from engine.service.topicread import ReadCounts, read_topic
from engine.settings import Settings
from engine.store.redisio import connect
from engine.store.snapshots import SnapshotStore
from models.errors import SnapshotRefused, UnknownSnapshot
from models.registry import REGISTRY, build
from tests.helpers import signing_keys
from tests.unit.test_backtest import DAY, T0, month

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def worker(infra: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    settings = isolated(infra).replace(record_signing_key="backtest-secret", record_key_id="w1")
    with running_worker(settings, tmp_path_factory.mktemp("backtest")) as w:
        yield w


@pytest.fixture(scope="module")
def candidate_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("candidate")
    for f in (ROOT / "rules").glob("*.yaml"):
        shutil.copy(f, folder / f.name)
    risk = (folder / "risk.yaml").read_text()
    assert risk.count("state.pin_failures_1h >= 3") == 1
    (folder / "risk.yaml").write_text(
        risk.replace("state.pin_failures_1h >= 3", "state.pin_failures_1h >= 2")
    )
    return folder


async def _count(settings: Settings, topic: str, since: float) -> int:
    return len([r async for r in read_topic(settings, topic, since)])


async def _wait_for(settings: Settings, topic: str, since: float, want: int) -> None:
    deadline = time.monotonic() + 60
    while await _count(settings, topic, since) < want:
        assert time.monotonic() < deadline, f"{topic}: fewer than {want} records arrived"
        await asyncio.sleep(0.5)


async def _forge(settings: Settings, value: dict[str, Any]) -> None:
    """An unsigned record on decisions.audit: a backtest must not count it."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic("decisions.audit"), orjson.dumps(value), key=b"FORGED")
    finally:
        await producer.stop()


def test_a_planted_rule_change_matches_the_hand_count(
    worker: WorkerProcess, candidate_dir: Path, tmp_path: Path
) -> None:
    s = worker.settings
    tag = uuid.uuid4().hex[:6]
    since = time.time() - 5
    t0 = time.time() - 900
    events = [
        {"event_id": f"pin-{tag}-{k}-{n}", "customer_id": f"BT{k}{tag}", "channel": "atm",
         "type": "pin_failure", "ts": t0 + k * 120 + n, "terminal_id": "ATM-T-1"}
        for k in range(1, 5) for n in range(1, k + 1)
    ]  # fmt: skip
    reports = [
        {"event_id": f"rep-{tag}-{i}", "customer_id": f"BT{k}{tag}", "channel": "mobile", "type": "fraud_report",
         "ts": time.time() - 5 + i, "attributes": {"ref_event_id": f"pin-{tag}-{k}-{n}", "ref_channel": "atm"}}
        for i, (k, n) in enumerate(((3, 3), (4, 2)))
    ]  # fmt: skip
    # Customers offers are made to, often enough that contact caps hold some back.
    profile = {"segment": "affluent", "income_band": "high", "products": ["current"], "kyc_risk": "low",
               "tenure_months": 36, "timezone": "Europe/London"}  # fmt: skip
    offered = [
        {"event_id": f"web-{tag}-{c}-{i}", "customer_id": f"BO{c}{tag}", "channel": "internet", "type": "login",
         "ts": t0 + 600 + c * 60 + i, "device_id": f"pc-{c}"}
        for c in range(3) for i in range(5)
    ]  # fmt: skip
    with httpx.Client(base_url=worker.url, timeout=10) as http:
        for c in range(3):
            assert http.put(f"/v1/customers/BO{c}{tag}/profile", json=profile).status_code == 200
        for event in [*events, *offered, *reports]:
            assert http.post("/v1/decisions", json=event).status_code == 200
    events += offered
    asyncio.run(_wait_for(s, "decisions.audit", since, len(events) + len(reports)))
    asyncio.run(_wait_for(s, "feedback", since, len(reports)))
    real = asyncio.run(_first_audit(s, since))
    asyncio.run(_forge(s, {**real, "event_id": "forged", "event": {**real["event"], "event_id": "forged"}}))
    counts = ReadCounts()
    read = asyncio.run(_all_audit(s, since, counts))
    assert counts.skipped == {"record_unsigned": 1} and len(read) == len(events) + len(reports)
    assert all(isinstance(r.get("profile"), dict) for r in read if not r.get("feedback"))

    shown = [a["kind"] for r in read for a in r["actions"]]
    capped = [
        d for r in read for d in r.get("explain", {}).get("dropped", []) if d["stage"] == "contact_policy"
    ]
    assert shown.count("offer") + shown.count("service") > 0 and capped, "offers shown and capped"

    # The live rules decide every event again exactly as the worker did: offers and caps too.
    same = asyncio.run(run(s, Request(ROOT / "rules", since=since - 3600)))
    assert same["records"]["re_decided"] == 25 and same["records"]["changed"] == 0
    assert same["offers"]["events_changed"] == 0 and same["contacts"]["old"] == same["contacts"]["new"] > 0

    report = asyncio.run(run(s, Request(candidate_dir, since=since - 3600, channels=("atm",))))
    assert report["records"]["re_decided"] == 10
    assert report["records"]["skipped"] == {"other_channel": 17}  # the logins, the reports
    pins = report["rules"]["pin_bruteforce"]
    assert pins["old"] == {"fires": 3, "fraud": 1, "precision": 0.3333, "recall": 0.5}
    assert pins["new"] == {"fires": 6, "fraud": 2, "precision": 0.3333, "recall": 1.0}
    atm = report["verdicts"]["by_channel"]["atm"]
    assert atm["matrix"]["allow"]["block"] == 3 and atm["matrix"]["block"]["block"] == 3
    assert atm["matrix"]["allow"]["allow"] == 4 and atm["stricter"] == 3 and atm["looser"] == 0
    assert report["alerts"] | {"any_alert": None, "events_alerted": None} == {
        "old": 3, "new": 6, "added": 3, "removed": 0, "old_kept_by_desk": 2,  # suppressed 1 h per customer
        "by_rule": {"pin_bruteforce": {"added": 3, "removed": 0}}, "any_alert": None, "events_alerted": None,
    }  # fmt: skip
    assert report["labels"] == {"fraud": 2, "legitimate": 0, "unlabelled": 8}
    assert report["offers"]["events_changed"] == 3  # the ATM's risk treatment for the new blocks

    # The command, twice, against the topic: byte-identical files.
    outs = []
    for name in ("one", "two"):
        out = tmp_path / name
        cmd = [sys.executable, "-m", "engine.cli", "backtest", "--rules", str(candidate_dir),
               "--since", str(since - 3600), "--out", str(out), "--format", "json"]  # fmt: skip
        done = subprocess.run(cmd, env=settings_env(s), capture_output=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        assert orjson.loads(done.stdout) == orjson.loads((out / "backtest.json").read_bytes())
        outs.append(out)
    for name in ("backtest.json", "backtest.md", "backtest.png"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name


async def _first_audit(settings: Settings, since: float) -> dict[str, Any]:
    async for record in read_audit(settings, since, None):
        if not record.get("feedback"):
            return record
    raise AssertionError("no audit record")


async def _all_audit(settings: Settings, since: float, counts: ReadCounts) -> list[dict[str, Any]]:
    return [r async for r in read_topic(settings, "decisions.audit", since, None, counts)]


def test_a_model_snapshot_version_is_verified_then_scores_the_backtest(
    infra: Settings, tmp_path: Path
) -> None:
    settings = isolated(infra, **signing_keys())
    records, hand = month()
    alarmed = build("fraud")  # taught that every one of these events is fraud (score > 0.9)
    inputs = [REGISTRY["fraud"].features.extract(r["features"], {}) for r in records if r.get("features")]
    for _ in range(20):
        for x in inputs:
            alarmed.learn_one(x, True)

    async def publish() -> str:
        client = connect(settings)
        try:
            return await SnapshotStore(client, settings).publish("fraud", alarmed, {"note": "backtest"})
        finally:
            await client.aclose()

    version = asyncio.run(publish())
    audit = tmp_path / "audit.jsonl"
    audit.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    request = Request(ROOT / "rules", since=T0, until=T0 + 3 * DAY, models=(version,), file=audit)
    report = asyncio.run(run(settings, request))
    assert report["backtest"]["candidate"] == {"rules": report["backtest"]["candidate"]["rules"],
                                               "models": {"fraud": version}}  # fmt: skip
    # The fraud score alone now blocks every event the rules did not block already.
    assert report["verdicts"]["new"] == {"allow": 0, "review": 0, "step_up": 0, "block": hand["events"]}
    assert report["alerts"]["added"] == report["alerts"]["removed"] == 0  # the rules did not change

    with pytest.raises(UnknownSnapshot):
        asyncio.run(
            run(settings, Request(ROOT / "rules", since=T0, models=("fraud-v999-0123456789ab",), file=audit))
        )
    stranger = isolated(infra, **signing_keys()).replace(key_prefix=settings.key_prefix)  # other public key
    with pytest.raises(SnapshotRefused):
        asyncio.run(run(stranger, request))
