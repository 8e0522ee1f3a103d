"""Issue 18: the backtest through the API and the console, on a real worker, Redis and
broker. ``GET /v1/reports/backtest`` backtests the shadow version the worker runs
(``beacon rules publish --shadow DIR``) against what was decided, and gives the report
``beacon backtest --rules DIR`` gives over the same period (but for the candidate's name).

The planted change and the hand count are tests/integration/test_backtest.py's: customer
k (k = 1..4) fails their PIN k times within ten minutes; the live pack blocks from the
3rd failure, the candidate from the 2nd. Live fires 0 + 0 + 1 + 2 = 3 times, the
candidate 0 + 1 + 2 + 3 = 6; 3 ATM verdicts go from allow to block. Fraud reports label
P3's 3rd and P4's 2nd failure: live precision 1/3 and recall 1/2, the candidate 2/6, 2/2.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from engine.cli.main import main
from engine.ops.launcher import WorkerProcess, settings_env
from engine.service.topicread import read_topic
from engine.settings import Settings
from engine.store.redisio import connect
from engine.store.users import AuthStore
from tests.helpers import isolated, running_worker, signing_keys

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery"


@dataclass
class Deployment:
    worker: WorkerProcess
    tokens: dict[str, str]
    candidate: Path
    params: dict[str, str]  # the period and channel of the backtest

    @property
    def settings(self) -> Settings:
        return self.worker.settings

    def get(self, params: dict[str, str], token: str | None = "analyst") -> httpx.Response:
        headers = {} if token is None else {"Authorization": f"Bearer {self.tokens[token]}"}
        return httpx.get(
            f"{self.worker.url}/v1/reports/backtest", params=params, headers=headers, timeout=120
        )


def _candidate(folder: Path) -> Path:
    for f in (ROOT / "rules").glob("*.yaml"):
        shutil.copy(f, folder / f.name)
    risk = (folder / "risk.yaml").read_text()
    # The rule, and the pack's own test case of it (a publish runs the pack's tests).
    changes = (("state.pin_failures_1h >= 3", "state.pin_failures_1h >= 2"),
               ("two PIN failures are a typo, not an attack", "two PIN failures are blocked"),
               ("expect: {not_fired: [pin_bruteforce], verdict: allow}",
                "expect: {fires: [pin_bruteforce], verdict: block}"))  # fmt: skip
    for before, after in changes:
        assert risk.count(before) == 1, before
        risk = risk.replace(before, after)
    (folder / "risk.yaml").write_text(risk)
    return folder


async def _people(s: Settings) -> dict[str, str]:
    client = connect(s)
    try:
        store = AuthStore(client, s.key_prefix)
        tokens = {"analyst": await store.add_token("analyst", "bi-tool"),
                  "atm": await store.add_token("channel", "atm-switch", "atm"),
                  "mobile": await store.add_token("channel", "mobile-app", "mobile")}  # fmt: skip
        await store.add_user("ana", "analyst", PASSWORD)
    finally:
        await client.aclose()
    return tokens


async def _count(s: Settings, topic: str, since: float) -> int:
    return len([r async for r in read_topic(s, topic, since)])


def _wait_for(s: Settings, topic: str, since: float, want: int) -> None:
    deadline = time.monotonic() + 60
    while asyncio.run(_count(s, topic, since)) < want:
        assert time.monotonic() < deadline, f"{topic}: fewer than {want} records arrived"
        time.sleep(0.5)


def _wait(what: str, check: Any) -> None:
    deadline = time.monotonic() + 30
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def deployment(infra: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    s = isolated(infra, auth_required=True, rules_poll_s=0.5, record_signing_key="bt-api-secret",
                 record_key_id="w1", **signing_keys())  # fmt: skip
    tokens = asyncio.run(_people(s))
    candidate = _candidate(tmp_path_factory.mktemp("candidate"))
    with running_worker(s, tmp_path_factory.mktemp("btapi")) as w:
        d = Deployment(w, tokens, candidate, {})
        # Before any shadow version: nothing to backtest.
        none = d.get({})
        assert none.status_code == 409 and none.json()["error"]["code"] == "no_shadow", none.text
        assert "beacon rules publish --shadow DIR" in none.json()["error"]["message"]

        mp = pytest.MonkeyPatch()
        mp.setenv("BEACON_SIGNING_KEY_FILE", s.signing_key_file)
        try:
            argv = ["rules", "publish", "--shadow", str(candidate), "--redis-url", s.redis_url,
                    "--key-prefix", s.key_prefix]  # fmt: skip
            assert main(argv) == 0
        finally:
            mp.undo()
        _wait("the shadow version to run", lambda: (_rules(d).get("shadow") or {}).get("running"))

        tag = uuid.uuid4().hex[:6]
        since = time.time() - 5
        t0 = time.time() - 900
        pins = [
            {"event_id": f"pin-{tag}-{k}-{n}", "customer_id": f"BT{k}{tag}", "channel": "atm",
             "type": "pin_failure", "ts": t0 + k * 120 + n, "terminal_id": "ATM-T-1"}
            for k in range(1, 5) for n in range(1, k + 1)
        ]  # fmt: skip
        reports = [
            {"event_id": f"rep-{tag}-{i}", "customer_id": f"BT{k}{tag}", "channel": "mobile",
             "type": "fraud_report", "ts": time.time() - 5 + i,
             "attributes": {"ref_event_id": f"pin-{tag}-{k}-{n}", "ref_channel": "atm"}}
            for i, (k, n) in enumerate(((3, 3), (4, 2)))
        ]  # fmt: skip
        with httpx.Client(base_url=w.url, timeout=10) as http:
            for event in [*pins, *reports]:
                auth = {"Authorization": f"Bearer {tokens[event['channel']]}"}
                r = http.post("/v1/decisions", content=orjson.dumps(event), headers=auth)
                assert r.status_code == 200, r.text
        _wait_for(s, "decisions.audit", since, len(pins) + len(reports))
        _wait_for(s, "feedback", since, len(reports))
        d.params = {
            "since": str(round(since - 3600)),
            "until": str(round(time.time() + 60)),
            "channel": "atm",
        }
        yield d


def _rules(d: Deployment) -> dict[str, Any]:
    r = httpx.get(f"{d.worker.url}/v1/rules", headers={"Authorization": f"Bearer {d.tokens['analyst']}"})
    assert r.status_code == 200, r.text
    return dict(r.json())


def _cli(d: Deployment, fmt: str) -> bytes:
    p = d.params
    cmd = [sys.executable, "-m", "engine.cli", "backtest", "--rules", str(d.candidate), "--since", p["since"],
           "--until", p["until"], "--channel", p["channel"], "--format", fmt]  # fmt: skip
    done = subprocess.run(cmd, env=settings_env(d.settings), capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return done.stdout


def test_the_api_backtests_the_shadow_version_as_counted_by_hand_and_as_the_command_does(
    deployment: Deployment,
) -> None:
    d = deployment
    r = d.get(d.params)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json"), r.text
    report = r.json()
    shadow = _rules(d)["shadow"]["version"]
    assert report["backtest"]["candidate"] == {"rules": shadow, "models": "as recorded"}
    assert report["records"]["re_decided"] == 10
    assert report["records"]["skipped"] == {"other_channel": 2}  # the fraud reports
    pins = report["rules"]["pin_bruteforce"]
    assert pins["old"] == {"fires": 3, "fraud": 1, "precision": 0.3333, "recall": 0.5}
    assert pins["new"] == {"fires": 6, "fraud": 2, "precision": 0.3333, "recall": 1.0}
    atm = report["verdicts"]["by_channel"]["atm"]
    assert atm["matrix"]["allow"]["block"] == 3 and atm["matrix"]["block"]["block"] == 3
    assert atm["matrix"]["allow"]["allow"] == 4 and atm["stricter"] == 3 and atm["looser"] == 0
    assert (report["alerts"]["old"], report["alerts"]["new"]) == (3, 6)
    assert report["alerts"]["by_rule"] == {"pin_bruteforce": {"added": 3, "removed": 0}}
    assert report["labels"] == {"fraud": 2, "legitimate": 0, "unlabelled": 8}

    # `beacon backtest --rules <the same folder>` over the same period: the same bytes, but
    # for the candidate's name (the same files: the same digest).
    digest = shadow.split("-", 1)[1]
    cli = _cli(d, "json")
    assert orjson.loads(cli)["backtest"]["candidate"]["rules"] == f"candidate-{digest}"
    assert r.content == cli.replace(f"candidate-{digest}".encode(), shadow.encode())
    again = d.get(d.params)
    assert again.content == r.content  # deterministic

    md = d.get({**d.params, "format": "md"})
    assert md.status_code == 200 and md.headers["content-type"].startswith("text/markdown"), md.text
    assert md.text.startswith("# Backtest") and "| pin_bruteforce | 3 | 6 |" in md.text
    assert md.content == _cli(d, "md").replace(f"candidate-{digest}".encode(), shadow.encode())


def test_bad_requests_and_callers_are_refused(deployment: Deployment) -> None:
    d = deployment
    bad = [
        ({"since": "soon"}, "since"),
        ({"since": "2026-11-02T00:00:00Z", "until": "2026-11-01T00:00:00Z"}, "since"),
        ({"since": "2026-01-01T00:00:00Z", "until": "2026-11-01T00:00:00Z"}, "since"),  # > 92 days
        ({"until": "tomorrow"}, "until"),
        ({"channel": "fax"}, "channel"),
        ({"channel": "atm,fax"}, "channel"),
        ({"format": "pdf"}, "format"),
    ]
    for params, field in bad:
        r = d.get(params)
        assert r.status_code == 400, (params, r.text)
        assert r.json()["error"]["code"] == "invalid_value" and r.json()["error"]["field"] == field, params
    forbidden = d.get(d.params, token="atm")
    assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "forbidden"
    assert d.get(d.params, token=None).status_code == 401


def test_an_analyst_runs_the_backtest_in_the_console(deployment: Deployment, tmp_path: Path) -> None:
    """The analysts' page in a real headless browser: the live and shadow versions shown,
    a backtest run, its tables, and the JSON downloaded as the API gives it; nothing the
    page's Content-Security-Policy refuses."""
    from playwright.sync_api import expect, sync_playwright

    d = deployment
    status = _rules(d)
    flags = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run"]  # fmt: skip
    refused: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=shutil.which("chromium") or "/usr/bin/chromium", args=flags
        )
        page = browser.new_page(accept_downloads=True)
        page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
        page.goto(d.worker.url + "/console/analyst")
        page.fill("#user", "ana")
        page.fill("#password", PASSWORD)
        page.click("#login button")
        expect(page.locator("#app")).to_be_visible(timeout=15_000)
        expect(page.locator("#versions")).to_contain_text(status["live"]["version"], timeout=15_000)
        expect(page.locator("#versions")).to_contain_text(status["shadow"]["version"])
        page.fill("#bt-since", d.params["since"])
        page.fill("#bt-until", d.params["until"])
        page.fill("#bt-channel", "atm")
        page.click("#bt-run")
        expect(page.locator("#bt-status")).to_contain_text("10 events decided again", timeout=60_000)
        matrix = page.locator("#bt-verdicts table[data-channel=atm]")
        expect(matrix.locator("tr[data-was=allow] td[data-now=block]")).to_have_text("3")
        expect(matrix.locator("tr[data-was=block] td[data-now=block]")).to_have_text("3")
        expect(page.locator("#bt-alerts")).to_contain_text("3 added, 0 removed")
        row = page.locator("#bt-rules tr", has_text="pin_bruteforce")
        expect(row.locator("td")).to_have_text(["pin_bruteforce", "3", "6", "1", "2", "33.3%", "33.3%", "50.0%",
                                                "100.0%"])  # fmt: skip
        expect(page.locator("#bt-daily tr")).not_to_have_count(0)
        with page.expect_download() as got:
            page.click("#bt-json")
        saved = tmp_path / "backtest.json"
        got.value.save_as(saved)
        with page.expect_download() as got_md:
            page.click("#bt-md")
        saved_md = tmp_path / "backtest.md"
        got_md.value.save_as(saved_md)
        browser.close()
    assert refused == []
    assert saved.read_bytes() == d.get(d.params).content
    assert saved_md.read_bytes() == d.get({**d.params, "format": "md"}).content
