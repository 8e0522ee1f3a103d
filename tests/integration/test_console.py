"""The risk officers' console end to end in a real headless browser (Debian's Chromium,
driven by Playwright): log in, see an alert raised through the public API appear live,
read why it was raised, resolve it, and find the disposition as a label on `feedback`;
and a busy desk (issue 19, item 5): filters, counts, paging, search, what is beside an
alert, bulk acknowledge and the keyboard.

``make console-screenshot`` regenerates docs/console.png from the same busy desk
(``BEACON_SCREENSHOT=docs/console.png``; skipped otherwise, so no test run rewrites it)."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from engine.ops.launcher import WorkerProcess
from engine.settings import Settings
from engine.store.redisio import connect
from engine.store.users import AuthStore
from tests import deskdata
from tests.helpers import consume_until, isolated, running_worker

pytestmark = pytest.mark.integration
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PASSWORD = "officer password 1"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--font-render-hinting=none"]  # fmt: skip
MORNING_MS = 1_796_371_200_000  # 2026-12-04 08:00 UTC: the busy desk's morning starts


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
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
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


async def _busy_desk(s: Settings) -> None:
    client = connect(s)
    try:
        await AuthStore(client, s.key_prefix).add_user("olive", "risk_officer", PASSWORD)
        await deskdata.seed(client, s.key_prefix, MORNING_MS, s.alert_retention_s)
    finally:
        await client.aclose()


@pytest.fixture(scope="module")
def busy(infra: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """A worker over the desk of a busy morning (fixed times: kept for 20 years)."""
    s = isolated(infra, auth_required=True, alert_retention_s=20 * 365 * 86400)
    asyncio.run(_busy_desk(s))
    with running_worker(s, tmp_path_factory.mktemp("busy")) as w:
        yield w


def _logged_in(p: Any, worker: WorkerProcess) -> tuple[Any, Any]:
    from playwright.sync_api import expect

    browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
    context = browser.new_context(viewport={"width": 1440, "height": 960}, locale="en-GB",
                                  timezone_id="Europe/London", device_scale_factor=1)  # fmt: skip
    page = context.new_page()
    page.goto(worker.url + "/console")
    page.fill("#user", "olive")
    page.fill("#password", PASSWORD)
    page.click("#login button")
    expect(page.locator("#live")).to_have_text("live", timeout=15_000)
    return browser, page


@pytest.mark.skipif(not os.environ.get("BEACON_SCREENSHOT"), reason="on demand: make console-screenshot")
def test_screenshot_of_the_busy_desk(busy: WorkerProcess) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser, page = _logged_in(p, busy)
        expect(page.locator("tr.alert")).to_have_count(25)
        page.locator("tr.alert", has_text="C108830").first.click()
        expect(page.locator("#earlier")).to_contain_text("transfer of 4,800.00")
        page.evaluate("window.scrollTo(0, 0)")
        page.mouse.move(0, 0)  # no hover highlight
        page.screenshot(path=os.environ["BEACON_SCREENSHOT"], animations="disabled", caret="hide")
        browser.close()


def test_a_busy_desk_filters_pages_searches_and_acknowledges_in_bulk(busy: WorkerProcess) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser, page = _logged_in(p, busy)
        rows, counts = page.locator("tr.alert"), page.locator("#counts")
        # 33 alerts (38 raised, 5 grouped into open ones): a page of 25, counts per status.
        expect(rows).to_have_count(25)
        expect(page.locator("#page-info")).to_have_text("1-25")
        for status, n in {
            "open": 23,
            "acknowledged": 3,
            "assigned": 3,
            "escalated": 1,
            "resolved": 3,
        }.items():
            expect(counts.locator(f"button[data-status={status}] .n")).to_have_text(str(n))
        page.click("#next")
        expect(rows).to_have_count(8)
        expect(page.locator("#page-info")).to_have_text("26-33")
        page.click("#prev")
        expect(rows).to_have_count(25)
        # Filters: severity; a status from its count; my alerts (assigned to olive, any status).
        page.select_option("#f-severity", "critical")
        expect(rows).to_have_count(3)
        expect(page.locator("tr.alert td.sev-critical")).to_have_count(3)
        expect(counts.locator("button[data-status=resolved] .n")).to_have_text("1")
        counts.locator("button[data-status=open]").click()
        expect(rows).to_have_count(2)
        page.click("#f-clear")
        page.check("#f-mine")
        expect(rows).to_have_count(3)
        page.click("#f-clear")
        expect(rows).to_have_count(25)
        # Search by customer with the keyboard's "/": the alert, its earlier alert and the
        # customer's recent interactions beside it.
        page.locator("body").press("/")
        expect(page.locator("#search")).to_be_focused()
        page.keyboard.type("C104233")
        page.keyboard.press("Enter")
        expect(rows).to_have_count(2)
        rows.first.click()
        expect(page.locator("#alert-title")).to_contain_text("C104233")
        expect(page.locator("#earlier")).to_contain_text("3 complaints in 7 days")
        expect(page.locator("#earlier")).to_contain_text("legitimate")
        expect(page.locator("#recent")).to_contain_text("internet login")
        # Bulk acknowledge: each alert's move checked, the refusals named.
        page.click("#f-clear")
        page.fill("#f-typology", "money_mule")
        page.keyboard.press("Enter")
        expect(rows).to_have_count(5)
        page.check("#select-all")
        expect(page.locator("#selected-count")).to_have_text("5 selected")
        page.click("#bulk-ack")
        result = page.locator("#bulk-result")
        expect(result).to_contain_text("3 acknowledged")
        expect(result).to_contain_text("2 not")
        expect(result).to_contain_text("not open")
        expect(page.locator("tr.alert td.status", has_text="open")).to_have_count(0)
        expect(counts.locator("button[data-status=acknowledged] .n")).to_have_text("4")
        # The keyboard: j/k move through the list, a acknowledges, ? shows the help.
        page.click("#f-clear")
        expect(rows).to_have_count(25)
        first, second = rows.nth(0).get_attribute("data-id") or "", rows.nth(1).get_attribute("data-id") or ""
        rows.nth(0).click()
        current = page.locator("tr.alert.current")
        expect(current).to_have_attribute("data-id", first)
        page.locator("body").press("j")
        expect(current).to_have_attribute("data-id", second)
        expect(page.locator("#alert-title")).to_contain_text(rows.nth(1).locator("td").nth(2).inner_text())
        page.keyboard.press("k")
        expect(current).to_have_attribute("data-id", first)
        expect(page.locator("#alert-status")).to_have_text("open")
        page.keyboard.press("a")
        expect(page.locator("#alert-status")).to_have_text("acknowledged")
        expect(page.locator("#trail")).to_contain_text("olive")
        page.keyboard.press("?")
        expect(page.locator("#help")).to_be_visible()
        page.keyboard.press("Escape")
        expect(page.locator("#help")).to_be_hidden()
        browser.close()
