"""The risk officers' console end to end in a real headless browser (Debian's Chromium,
driven by Playwright): log in, see an alert raised through the public API appear live,
read why it was raised, resolve it, and find the disposition as a label on `feedback`."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Iterator

import httpx
import orjson
import pytest

from engine.ops.launcher import WorkerProcess
from engine.settings import Settings
from engine.store.redisio import connect
from engine.store.users import AuthStore
from tests.helpers import consume_until, isolated, running_worker

pytestmark = pytest.mark.integration
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PASSWORD = "officer password 1"


async def _accounts(s: Settings) -> str:
    client = connect(s)
    store = AuthStore(client, s.key_prefix)
    await store.add_user("olive", "risk_officer", PASSWORD)
    token = await store.add_token("channel", "atm-switch", "atm")
    await client.aclose()
    return token


@pytest.fixture(scope="module")
def console(infra: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[WorkerProcess, str]]:
    s = isolated(infra, auth_required=True)
    token = asyncio.run(_accounts(s))
    with running_worker(s, tmp_path_factory.mktemp("console")) as w:
        yield w, token


def test_an_officer_sees_an_alert_live_and_resolves_it(console: tuple[WorkerProcess, str]) -> None:
    from playwright.sync_api import expect, sync_playwright

    worker, token = console
    flags = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run"]  # fmt: skip
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=flags)
        page = browser.new_page()
        page.goto(worker.url + "/console")
        page.fill("#user", "olive")
        page.fill("#password", PASSWORD)
        page.click("#login button")
        expect(page.locator("#live")).to_have_text("live", timeout=15_000)
        expect(page.locator("#rules")).to_contain_text("rules v1-")  # and no shadow: GET /v1/rules
        expect(page.locator("#rules")).to_contain_text("no shadow version")
        # A channel system sends three PIN failures through the public API.
        with httpx.Client(
            base_url=worker.url, headers={"Authorization": f"Bearer {token}"}, timeout=5
        ) as http:
            for i in range(3):
                ev = {"event_id": f"cons-{i}", "customer_id": "K1", "channel": "atm", "type": "pin_failure",
                      "ts": time.time(), "terminal_id": "ATM-9"}  # fmt: skip
                assert http.post("/v1/decisions", content=orjson.dumps(ev)).status_code == 200
        row = page.locator("tr.alert", has_text="K1")
        expect(row).to_be_visible(timeout=30_000)  # arrived live, without reloading
        row.click()
        expect(page.locator("#why")).to_contain_text("state.pin_failures_1h")
        expect(page.locator("#detail")).to_contain_text("3 PIN failures")
        # People read values, not the engine's encodings (issue 19, item 4): no previous
        # location instead of -1, yes/no instead of 0/1.
        evidence = page.locator("#evidence")
        expect(evidence).to_contain_text("distance_km: no previous location")
        expect(evidence).not_to_contain_text("-1")
        expect(evidence).to_contain_text("new_device: no")
        page.click("#assign")
        expect(page.locator("#alert-status")).to_have_text("assigned")
        page.select_option("#disposition", "fraud")
        page.fill("#note", "card skimmed at ATM-9")
        page.click("#resolve")
        expect(page.locator("#alert-status")).to_have_text("resolved")
        expect(page.locator("#trail")).to_contain_text("olive")
        expect(page.locator("#trail")).to_contain_text("assign")
        expect(page.locator("tr.alert", has_text="K1")).to_contain_text("resolved")  # the inbox followed
        browser.close()
    s = worker.settings

    def labelled(records: list[object]) -> bool:
        return any(b'"cons-2"' in r[2] and b"disposition" in r[2] for r in records)  # type: ignore[index]

    out = asyncio.run(consume_until(s.kafka_bootstrap, [s.topic("feedback")], 0, timeout=30, done=labelled))
    labels = [orjson.loads(v) for _, _, v, _ in out if b"disposition" in v]
    assert any(x["event_id"] == "cons-2" and x["label"] is True for x in labels)
