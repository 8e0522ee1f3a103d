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


def test_replay_over_http_with_auth_on_sends_each_channels_token(
    infra: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 15, item 6: with auth on (the default), a replay through HTTP must present a
    channel token per channel; before, every event got 401. The history is older than a
    day: --retime keeps its spacing and ends it now (before, it began now, so most of it
    was refused ts_in_future)."""
    import asyncio

    from engine.store.redisio import connect
    from engine.store.users import AuthStore

    s = isolated(infra, auth_required=True)
    _env(monkeypatch, s)

    async def tokens() -> dict[str, str]:
        client = connect(s)
        store = AuthStore(client, s.key_prefix)
        made = {c: await store.add_token("channel", f"replay-{c}", c) for c in ("atm", "mobile")}
        await client.aclose()
        return made

    made = asyncio.run(tokens())
    token_file = tmp_path / "tokens"
    token_file.write_text("".join(f"{c}={t}\n" for c, t in made.items()))
    token_file.chmod(0o600)
    start = time.time() - 40 * 86400  # a history from 40 days ago, spanning 2 days
    lines = [
        orjson.dumps({"event_id": f"auth-{i}", "customer_id": "RA1", "channel": ("atm", "mobile")[i % 2],
                      "type": "login", "ts": start + i * 3600})
        for i in range(48)
    ]  # fmt: skip
    f = tmp_path / "history.jsonl"
    f.write_bytes(b"\n".join(lines) + b"\n")
    with running_worker(s, tmp_path / "logs") as worker:
        args = ["replay", str(f), "--rate", "200", "--via", "http", "--url", worker.url, "--retime"]
        code = main([*args, "--token-file", str(token_file), *_args(s)])
    out = capsys.readouterr().out
    assert code == 0 and "replayed 48 events: 200=48" in out, out


def test_replay_of_a_years_old_history_on_a_history_clock_worker(
    infra: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 15, item 6: a history older than BEACON_MAX_EVENT_AGE_S was refused ts_too_old
    whatever the replay did. A replay deployment (BEACON_EVENT_CLOCK=history, its own key
    prefix) measures the age from the newest event it accepted: a two-year-old history is
    decided with the windows it had then, and a straggler far behind it is still refused."""
    s = isolated(infra, event_clock="history", max_event_age_s=7 * 86400.0)
    _env(monkeypatch, s)
    start = time.time() - 2 * 365 * 86400
    rows = [
        {"event_id": f"old-{i}", "customer_id": "H1", "channel": "atm", "type": "withdrawal",
         "ts": start + i * 600, "amount": 20.0}
        for i in range(6)
    ]  # fmt: skip
    rows.append({**rows[0], "event_id": "straggler", "ts": start - 30 * 86400})
    f = tmp_path / "history.jsonl"
    f.write_bytes(b"\n".join(orjson.dumps(r) for r in rows) + b"\n")
    with running_worker(s, tmp_path / "logs") as worker:
        code = main(["replay", str(f), "--rate", "100", "--via", "http", "--url", worker.url, *_args(s)])
        view = httpx.get(f"{worker.url}/v1/customers/H1").json()
    out = capsys.readouterr().out
    assert code == 1 and "replayed 7 events: 200=6, 400=1" in out, out
    assert "older than" not in out  # no warning that the history will be refused: it is not
    # The windows are the customer's as of the history's last event: six withdrawals in an hour.
    assert view["windows"]["1h"]["all"]["count"] == 6
