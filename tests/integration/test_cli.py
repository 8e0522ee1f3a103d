"""The `beacon` commands against real servers: import, replay (both paths), doctor."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from engine.cli.main import build_parser, main
from engine.ops.launcher import WorkerProcess
from engine.settings import Settings
from tests.helpers import isolated, running_worker

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def worker(infra: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    with running_worker(isolated(infra), tmp_path_factory.mktemp("cli")) as w:
        yield w


def _args(s: Settings) -> list[str]:
    return ["--redis-url", s.redis_url, "--kafka", s.kafka_bootstrap, "--http-port", str(s.http_port)]


def _env(monkeypatch: pytest.MonkeyPatch, s: Settings) -> None:
    monkeypatch.setenv("BEACON_TOPIC_PREFIX", s.topic_prefix)
    monkeypatch.setenv("BEACON_KEY_PREFIX", s.key_prefix)


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert {"up", "worker", "demo", "replay", "customers", "doctor"} <= set(commands)
    for name in [*commands, "customers import"]:
        with pytest.raises(SystemExit) as exit_info:
            main([*name.split(), "--help"])
        assert exit_info.value.code == 0
        assert "usage: beacon" in capsys.readouterr().out


def test_customers_import_reports_bad_rows(
    worker: WorkerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = worker.settings
    _env(monkeypatch, s)
    csv = tmp_path / "profiles.csv"
    csv.write_text(
        "customer_id,segment,income_band,kyc_risk,products,tenure_months\n"
        "P1,affluent,high,low,current;mortgage,40\n"
        "P2,mass,low,low,current,lots\n"
    )
    assert main(["customers", "import", str(csv), "--redis-url", s.redis_url]) == 1
    view = httpx.get(f"{worker.url}/v1/customers/P1").json()
    assert view["profile"] == {
        "segment": "affluent", "income_band": "high", "kyc_risk": "low",
        "products": ["current", "mortgage"], "tenure_months": 40,
    }  # fmt: skip
    assert httpx.get(f"{worker.url}/v1/customers/P2").status_code == 404


@pytest.mark.parametrize("via", ["http", "kafka"])
def test_replay_file_reaches_state(
    via: str, worker: WorkerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = worker.settings
    _env(monkeypatch, s)
    customer = f"R-{via}"
    now = time.time()
    lines = [
        orjson.dumps({"event_id": f"{via}-{i}", "customer_id": customer, "channel": "mobile",
                      "type": "card_payment", "ts": now - 60 + i, "amount": 10.25})
        for i in range(20)
    ]  # fmt: skip
    f = tmp_path / "events.jsonl"
    f.write_bytes(b"\n".join(lines) + b"\n")
    assert main(["replay", str(f), "--rate", "200", "--via", via, *_args(s)]) == 0
    deadline = time.monotonic() + 30
    count = 0
    while time.monotonic() < deadline:
        r = httpx.get(f"{worker.url}/v1/customers/{customer}")
        if r.status_code == 200:
            count = r.json()["windows"]["24h"]["all"]["count"]
            if count == 20:
                break
        time.sleep(0.2)
    assert count == 20
    assert r.json()["windows"]["24h"]["all"]["amount"] == 205.0


def test_doctor_with_real_servers(
    worker: WorkerProcess, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    s = worker.settings
    _env(monkeypatch, s)
    assert main(["doctor", *_args(s), "--url", worker.url]) == 0
    out = capsys.readouterr().out
    assert "[ok] redis: reachable, version 6.2" in out and "[ok] topics: all present" in out
    assert "[ok] broker: reachable" in out and "[ok] worker:" in out and "all good" in out
    monkeypatch.setenv("BEACON_TOPIC_PREFIX", "nobody-made-these.")
    assert main(["doctor", *_args(s)]) == 1
    assert "[FAIL] topics: missing nobody-made-these.interactions" in capsys.readouterr().out


def test_doctor_names_an_unreachable_redis(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--redis-url", "redis://127.0.0.1:1/0", "--kafka", "127.0.0.1:1"]) == 1
    out = capsys.readouterr().out
    assert "[FAIL] redis: cannot reach Redis" in out and "[FAIL] broker: cannot reach 127.0.0.1:1" in out
