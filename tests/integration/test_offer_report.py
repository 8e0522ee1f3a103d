"""Issue 18, items 1 and 4 with real servers: a month of decisions.audit records with a
planted uplift for one offer and none for another (tests/offermonth.py: made by the
engine's own decision function) is published, signed, to a real broker's decisions.audit;
the report read from the topic (engine/service/auditlog.py), through a real worker's
``GET /v1/reports/offers`` (an analyst's token) and through ``beacon report offers``
finds the first (interval above zero) and not the second. Unsigned and forged records
and records before ``since`` are not read. Conversion events go in through the normal
paths: validated (400 / dead letter with the reason), acknowledged, and audited with
their product. The analyst role reads and changes nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from jsonschema import Draft202012Validator

from engine.cli.main import main
from engine.contract import topic_schema
from engine.domain.recordsig import record_signer
from engine.ops.infra import ensure_topics
from engine.ops.launcher import WorkerProcess
from engine.service.auditlog import read_audit
from engine.settings import Settings
from engine.store.redisio import connect
from engine.store.users import AuthStore
from tests.helpers import consume_until, isolated, running_worker
from tests.offermonth import GOLD, LOAN, month_of_audit

pytestmark = pytest.mark.integration
DAY = 86400.0
FORGED = {"decision_id": "forged-1", "customer_id": "F1", "channel": "mobile", "event": {"ts": 0.0}}


class Month:
    def __init__(self, settings: Settings, start: float, mark: float, records: list[dict[str, Any]]) -> None:
        self.settings, self.start, self.mark, self.records = settings, start, mark, records

    @property
    def period(self) -> dict[str, str]:
        return {"since": str(self.start), "until": str(self.start + 30 * DAY)}


async def _publish(s: Settings, start: float) -> Month:
    """Records before the mark (not to be read), then the month, an unsigned and a forged one."""
    await ensure_topics(s)
    topic, signer = s.topic("decisions.audit"), record_signer(s)
    records = month_of_audit(start, customers=2400)
    producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, linger_ms=20)
    await producer.start()
    try:

        async def send(record: dict[str, Any], sign: bool = True, tamper: bool = False) -> None:
            key, value = str(record["customer_id"]).encode(), orjson.dumps(record)
            headers = signer.headers(topic, key, value, []) if sign else []
            if tamper:
                value = orjson.dumps({**record, "customer_id": "X"})
            await producer.send(topic, value, key=key, headers=headers)

        for record in month_of_audit(start - 60 * DAY, customers=60, seed=99)[
            :40
        ]:  # before the mark and period
            await send({**record, "decision_id": "early-" + record["decision_id"]})
        await producer.flush()
        await asyncio.sleep(0.05)
        mark = time.time()
        await asyncio.sleep(0.05)
        for record in records:
            await send(record)
        forged = {
            **FORGED,
            "event": {"ts": start + DAY, "type": "login"},
            "actions": [{"id": LOAN, "kind": "offer"}],
        }
        await send(forged, sign=False)
        await send({**forged, "decision_id": "forged-2"}, tamper=True)
        await producer.flush()
    finally:
        await producer.stop()
    return Month(s, start, mark, records)


@pytest.fixture(scope="module")
def month(infra: Settings) -> Month:
    s = isolated(infra, auth_required=True, record_signing_key="offers-test-key", record_key_id="k1")
    start = time.time() - 31 * DAY  # so the attribution window after the period reaches now
    return asyncio.run(_publish(s, start))


def _check(report: dict[str, Any], month: Month) -> None:
    totals = {r["offer"]: r for r in report["totals"]}
    gold, loan = totals[GOLD]["uplift"], totals[LOAN]["uplift"]
    assert gold["excludes_zero"] and gold["low"] > 0, totals[GOLD]
    assert not loan["excludes_zero"] and loan["low"] < 0 < loan["high"], totals[LOAN]
    assert totals[GOLD]["held_out"] > 1000 and totals[GOLD]["shown_customers"] > 1000
    decisions = sum(1 for r in month.records if not r.get("feedback"))
    assert report["records"]["decisions"] == decisions  # not the early ones, not the forged ones
    assert report["off_policy"]["decisions"] > 1000 and report["off_policy"]["warning"] is None


async def test_the_report_read_from_the_topic_finds_the_planted_uplift(month: Month) -> None:
    from engine.decide.offerreport import ReportOptions, offer_report

    got = [r async for r in read_audit(month.settings, month.mark, None)]
    ids = {r["decision_id"] for r in got}
    assert len(got) == len(month.records) and not any(i.startswith(("early-", "forged-")) for i in ids)
    opts = ReportOptions(since=month.start, until=month.start + 30 * DAY)
    _check(offer_report(got, opts), month)
    # The period by broker time: nothing after an `until` already past.
    assert [r async for r in read_audit(month.settings, month.mark - 3600, month.mark)] != []
    assert [r async for r in read_audit(month.settings, time.time() + 60, None)] == []


def test_beacon_report_offers_reads_the_topic(
    month: Month, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    s = month.settings
    monkeypatch.setenv("BEACON_TOPIC_PREFIX", s.topic_prefix)
    monkeypatch.setenv("BEACON_RECORD_SIGNING_KEY", s.record_signing_key)
    args = ["report", "offers", "--since", month.period["since"], "--until", month.period["until"]]
    assert main([*args, "--kafka", s.kafka_bootstrap, "--format", "json"]) == 0
    _check(orjson.loads(capsys.readouterr().out), month)
    # An export of the period, then the report from the file: the same numbers.
    assert main(["report", "audit", "--since", str(month.mark), "--kafka", s.kafka_bootstrap]) == 0
    exported = capsys.readouterr()
    assert f"exported {len(month.records)} records" in exported.err
    path = tmp_path / "audit.jsonl"
    path.write_text(exported.out)
    assert main([*args, "--file", str(path), "--format", "json"]) == 0
    _check(orjson.loads(capsys.readouterr().out), month)
    monkeypatch.setenv("BEACON_RECORD_SIGNING_KEY", "another-key")  # every record now fails to verify
    assert main([*args, "--kafka", s.kafka_bootstrap, "--format", "json"]) == 0
    assert orjson.loads(capsys.readouterr().out)["records"]["records"] == 0


async def _people(s: Settings) -> dict[str, str]:
    client = connect(s)
    store = AuthStore(client, s.key_prefix)
    tokens = {"analyst": await store.add_token("analyst", "bi-tool"),
              "branch": await store.add_token("channel", "core-banking", "branch"),
              "atm": await store.add_token("channel", "atm-switch", "atm")}  # fmt: skip
    await store.add_user("ana", "analyst", "correct horse battery")
    await client.aclose()
    return tokens


@pytest.fixture(scope="module")
def worker(
    month: Month, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[WorkerProcess, dict[str, str]]]:
    tokens = asyncio.run(_people(month.settings))
    with running_worker(month.settings, tmp_path_factory.mktemp("offers")) as w:
        yield w, tokens


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_an_analyst_gets_the_report_over_http(
    worker: tuple[WorkerProcess, dict[str, str]], month: Month
) -> None:
    w, tokens = worker
    with httpx.Client(base_url=w.url, timeout=60) as http:
        r = http.get("/v1/reports/offers", params=month.period, headers=_bearer(tokens["analyst"]))
        assert r.status_code == 200, r.text
        _check(r.json(), month)
        young = http.get("/v1/reports/offers", params={**month.period, "segment": "young", "channel": "mobile"},
                         headers=_bearer(tokens["analyst"])).json()  # fmt: skip
        assert {(row["channel"], row["segment"]) for row in young["rows"]} == {("mobile", "young")}
        bad = http.get("/v1/reports/offers", params={"since": "2026-11-02", "until": "2026-11-01"},
                       headers=_bearer(tokens["analyst"]))  # fmt: skip
        assert bad.status_code == 400 and bad.json()["error"]["field"] == "since"
        assert http.get("/v1/reports/offers", headers=_bearer(tokens["atm"])).status_code == 403
        assert http.get("/v1/reports/offers").status_code == 401


def test_the_analyst_role_reads_and_changes_nothing(worker: tuple[WorkerProcess, dict[str, str]]) -> None:
    w, tokens = worker
    ana = _bearer(tokens["analyst"])
    with httpx.Client(base_url=w.url, timeout=10) as http:
        assert http.get("/v1/alerts", headers=ana).status_code == 200
        assert http.get("/v1/customers/M00001", headers=ana).status_code in (200, 404)
        for method, path in (("POST", "/v1/alerts/x/ack"), ("POST", "/v1/alerts/x/resolve"),
                             ("PUT", "/v1/customers/M00001/profile"), ("PATCH", "/v1/customers/M00001/profile"),
                             ("POST", "/v1/decisions"), ("POST", "/v1/offers/score"),
                             ("GET", "/v1/customers/M00001/profile/history")):  # fmt: skip
            r = http.request(method, path, content=b"{}", headers={**ana, "Content-Type": "application/json"})
            assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", (method, path)
        login = http.post(
            "/v1/login", content=orjson.dumps({"user": "ana", "password": "correct horse battery"})
        )
        assert login.status_code == 200
        page = http.get("/console/analyst")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert (
            "script-src 'sha256-" in csp and "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        )
        assert page.headers["x-frame-options"] == "DENY" and "/v1/reports/offers" in page.text


async def test_conversions_go_in_like_any_event(worker: tuple[WorkerProcess, dict[str, str]]) -> None:
    w, tokens = worker
    s = w.settings
    event = {"event_id": "cv-http-1", "customer_id": "Q1", "channel": "branch", "type": "conversion",
             "ts": time.time(), "amount": 3000, "currency": "GBP",
             "attributes": {"product": LOAN, "branch_note": "kept out of the audit"}}  # fmt: skip
    async with httpx.AsyncClient(base_url=w.url, timeout=10) as http:
        ok = await http.post("/v1/decisions", content=orjson.dumps(event), headers=_bearer(tokens["branch"]))
        assert ok.status_code == 200 and ok.json()["feedback"] is True, ok.text
        bad = {**event, "event_id": "cv-http-2", "attributes": {"product": "no spaces allowed"}}
        refused = await http.post(
            "/v1/decisions", content=orjson.dumps(bad), headers=_bearer(tokens["branch"])
        )
        assert refused.status_code == 400
        assert refused.json()["error"] == {"code": "invalid_value", "field": "attributes.product",
                                           "message": refused.json()["error"]["message"]}  # fmt: skip
    producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap)
    await producer.start()
    try:
        wrong = {**event, "event_id": "cv-kafka-1", "attributes": {}}
        await producer.send_and_wait(s.topic("interactions"), orjson.dumps(wrong), key=b"Q1")
        right = {**event, "event_id": "cv-kafka-2"}
        await producer.send_and_wait(s.topic("interactions"), orjson.dumps(right), key=b"Q1")
    finally:
        await producer.stop()
    audit, dlq, answers = s.topic("decisions.audit"), s.topic("interactions.dlq"), s.topic("decisions.branch")

    def done(rs: list[Any]) -> bool:
        return {dlq, answers} <= {r[0] for r in rs} and any(
            r[0] == audit and b"cv-http-1" in r[2] for r in rs
        )

    got = await consume_until(s.kafka_bootstrap, [audit, dlq, answers], want=0, timeout=60, done=done)
    record = next(orjson.loads(r[2]) for r in got if r[0] == audit and b"cv-http-1" in r[2])
    assert record["feedback"] is True and record["event"]["attributes"] == {"product": LOAN}
    assert record["event"]["amount"] == 3000.0 and not any(b"cv-http-2" in r[2] for r in got if r[0] == audit)
    dead = next(r for r in got if r[0] == dlq)
    headers = {k: bytes(v).decode() for k, v in dead[3]}
    assert (
        headers["beacon-error-code"] == "missing_field"
        and headers["beacon-error-field"] == "attributes.product"
    )
    # The records as the published contract says (engine/contract/topics/).
    answer = next(r for r in got if r[0] == answers)  # a label event's answer: no model versions
    checks = (
        ("decisions.audit", _audit_of(got, audit), False),
        ("dlq", dead, True),
        ("decisions", answer, False),
    )
    for stem, (_, key, value, heads), raw in checks:
        doc = {"key": None if key is None else key.decode(), "headers": {k: bytes(v).decode() for k, v in heads},
               "value": value.decode() if raw else orjson.loads(value)}  # fmt: skip
        Draft202012Validator(topic_schema(stem)).validate(doc)
    record["event"]["attributes"] = {}  # and the schema refuses a conversion without its product
    wrong = {"key": "Q1", "headers": {}, "value": record}
    assert list(Draft202012Validator(topic_schema("decisions.audit")).iter_errors(wrong))


def _audit_of(got: list[Any], audit: str) -> Any:
    return next(r for r in got if r[0] == audit and b"cv-http-1" in r[2])


def test_the_month_fixture_is_what_the_tests_think(month: Month) -> None:
    assert month.mark > month.start + 30 * DAY and len(month.records) > 2400


def test_an_analyst_reads_the_report_in_the_console(
    worker: tuple[WorkerProcess, dict[str, str]], month: Month
) -> None:
    """The analysts' page in a real headless browser (as tests/integration/test_console.py):
    log in, run the month's report, see the planted uplift marked; nothing the page's
    Content-Security-Policy refuses."""
    import shutil

    from playwright.sync_api import expect, sync_playwright

    w, _ = worker
    flags = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run"]  # fmt: skip
    refused: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=shutil.which("chromium") or "/usr/bin/chromium", args=flags
        )
        page = browser.new_page()
        page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
        page.goto(w.url + "/console/analyst")
        page.fill("#user", "ana")
        page.fill("#password", "correct horse battery")
        page.click("#login button")
        expect(page.locator("#app")).to_be_visible(timeout=15_000)
        page.fill("#since", month.period["since"])
        page.fill("#until", month.period["until"])
        page.click("#filters button[type=submit]")
        gold = page.locator("#totals tr.sig", has_text=GOLD)
        expect(gold).to_be_visible(timeout=60_000)
        expect(page.locator("#totals tr", has_text=LOAN)).not_to_have_class("sig")
        expect(page.locator("#status")).to_contain_text("2400 decisions")
        expect(page.locator("#ope")).to_contain_text("Rests on")
        # No shadow rules version runs here: the backtest card says how to start one
        # (tests/integration/test_backtest_api.py runs one in the page).
        expect(page.locator("#versions")).to_contain_text("Shadow: none")
        page.click("#bt-run")
        expect(page.locator("#bt-status")).to_contain_text("beacon rules publish --shadow DIR")
        expect(page.locator("#bt-json")).to_be_disabled()
        browser.close()
    assert refused == []
