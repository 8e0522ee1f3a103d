"""The inbox of a busy desk against a real Redis (issue 19, item 5): the indexes the raise
and move scripts keep, exact paging by cursor when alerts share a millisecond, counts per
status, and alerts recorded before the indexes existed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from engine.settings import Settings
from engine.store.alerts import AlertDesk, AlertFilter
from engine.store.redisio import connect
from engine.store.users import AuthStore
from tests.helpers import isolated, running_worker

pytestmark = pytest.mark.integration
NOW = 1_795_428_000_000


@pytest.fixture
async def desk(infra: Settings) -> AsyncIterator[AlertDesk]:
    s = isolated(infra)
    client = connect(s)
    yield AlertDesk(client, s.key_prefix, retention_s=86400 * 3650, group_window_s=600, sla_s={})
    await client.aclose()


def alert(n: int, customer: str = "C1", rule: str = "pin_bruteforce", severity: str = "high",
          typologies: tuple[str, ...] = ("card_compromise",)) -> dict[str, Any]:  # fmt: skip
    return {"alert_id": f"a{n:02d}", "rule_id": rule, "severity": severity, "reason": f"reason {n}",
            "typologies": list(typologies), "customer_id": customer, "event_id": f"e{n}",
            "decision_id": f"d{n}", "channel": "atm", "ts": 1795428000.0 + n}  # fmt: skip


async def ids(desk: AlertDesk, flt: AlertFilter, limit: int = 50) -> list[str]:
    return [d["alert_id"] for d in (await desk.find(flt, limit)).alerts]


async def test_a_cursor_pages_exactly_through_alerts_of_the_same_millisecond(desk: AlertDesk) -> None:
    for n in range(7):  # a burst: every alert raised in the same ms
        await desk.raise_alert(alert(n, customer=f"C{n}"), NOW)
    seen, cursor, pages = [], None, 0
    while True:
        page = await desk.find(AlertFilter(), limit=3, cursor=cursor)
        seen += [d["alert_id"] for d in page.alerts]
        pages += 1
        if page.cursor is None:
            break
        cursor = page.cursor
    assert seen == [f"a{n:02d}" for n in reversed(range(7))] and pages == 3
    high = await desk.find(AlertFilter(severity="high"), limit=3, cursor="1795428000000:a04")
    assert [d["alert_id"] for d in high.alerts] == ["a03", "a02", "a01"]


async def test_the_indexes_follow_every_move_and_grouping(desk: AlertDesk) -> None:
    await desk.raise_alert(alert(1, customer="C1", severity="medium"), NOW)
    await desk.raise_alert(alert(2, customer="C2", typologies=("account_takeover",)), NOW + 1)
    await desk.raise_alert(alert(3, customer="C3", rule="velocity", typologies=()), NOW + 2)
    assert await ids(desk, AlertFilter(severity="medium")) == ["a01"]
    # One more event of C1's alert, critical this time: the alert is critical now.
    await desk.raise_alert(alert(4, customer="C1", severity="critical"), NOW + 3)
    assert await ids(desk, AlertFilter(severity="medium")) == []
    assert await ids(desk, AlertFilter(severity="critical")) == ["a01"]
    assert await ids(desk, AlertFilter(typology="velocity")) == ["a03"]  # its group: the rule
    assert await ids(desk, AlertFilter(typology="account_takeover")) == ["a02"]
    await desk.move("a01", "ack", "ann", NOW + 10)
    await desk.move("a02", "assign", "ann", NOW + 11, assignee="bob")
    assert await ids(desk, AlertFilter(status="open")) == ["a03"]
    assert await ids(desk, AlertFilter(status="acknowledged")) == ["a01"]
    assert await ids(desk, AlertFilter(assignee="bob")) == ["a02"]
    await desk.move("a02", "assign", "bob", NOW + 12, assignee="cy")
    assert await ids(desk, AlertFilter(assignee="bob")) == []
    assert await ids(desk, AlertFilter(assignee="cy", status="assigned")) == ["a02"]
    await desk.move("a02", "resolve", "cy", NOW + 13, disposition="legitimate")
    assert await ids(desk, AlertFilter(status="resolved", customer="C2")) == ["a02"]
    assert await ids(desk, AlertFilter(status="assigned")) == []
    counts, exact = await desk.counts(AlertFilter(), NOW + 20)
    assert exact and counts == {"open": 1, "acknowledged": 1, "assigned": 0, "escalated": 0, "resolved": 1}
    counts, exact = await desk.counts(AlertFilter(status="open", severity="critical"), NOW + 20)
    assert exact and counts == {"open": 0, "acknowledged": 1, "assigned": 0, "escalated": 0, "resolved": 0}
    counts, exact = await desk.counts(AlertFilter(severity="high"), NOW + 20)
    assert exact and counts == {"open": 1, "acknowledged": 0, "assigned": 0, "escalated": 0, "resolved": 1}


async def test_counts_are_exact_while_the_backlog_is_within_the_bound(desk: AlertDesk) -> None:
    for n in range(8):
        await desk.raise_alert(alert(n, customer=f"C{n}", severity="high" if n < 6 else "low"), NOW + n)
    for n in range(3):
        await desk.move(f"a{n:02d}", "resolve", "ann", NOW + 10, disposition="legitimate")
    # One filter: the open ones walked (3 high of 5 open), resolved is the rest of the 6 high.
    counts, exact = await desk.counts(AlertFilter(severity="high"), NOW + 20, scan_max=5)
    assert exact and (counts["open"], counts["resolved"]) == (3, 3)
    # Two filters: each status walked, at most scan_max entries each.
    both = AlertFilter(severity="high", typology="card_compromise")
    assert await desk.counts(both, NOW + 20, scan_max=5) == (counts, True)
    counts, exact = await desk.counts(both, NOW + 20, scan_max=2)
    assert not exact and counts["open"] == 0  # of the newest 2 open ones read: both low


async def test_alerts_recorded_before_the_indexes_are_indexed_once(desk: AlertDesk) -> None:
    for n in range(5):
        await desk.raise_alert(alert(n, customer=f"C{n % 2}", typologies=(f"t{n}",)), NOW + n)
    await desk.move("a03", "assign", "ann", NOW + 9, assignee="bob")
    r, k = desk._r, desk.keys
    await r.delete(*[key async for key in r.scan_iter(match=k.index("*") + "*")])  # as before the upgrade
    await r.delete(k.indexed)
    assert await r.exists(k.index("cu", "C1")) == 0
    fresh = AlertDesk(r, desk.key_prefix, desk.retention_s, desk.group_window_s, {})
    await fresh.ensure_indexed(chunk=2)
    assert await ids(fresh, AlertFilter(customer="C1")) == ["a03", "a01"]
    assert await ids(fresh, AlertFilter(assignee="bob", status="assigned")) == ["a03"]
    assert await r.exists(k.indexed) == 1


# --- Through a real worker's HTTP API, authentication on.

PASSWORD = "officer password 1"


async def _setup(s: Settings) -> None:
    client = connect(s)
    try:
        auth = AuthStore(client, s.key_prefix)
        await auth.add_user("olive", "risk_officer", PASSWORD)
        await auth.add_user("vic", "viewer", PASSWORD)
        desk = AlertDesk(client, s.key_prefix, s.alert_retention_s, s.alert_group_window_s, {})
        now = int(time.time() * 1000)
        for n in range(12):
            sev = ("low", "medium", "high", "critical")[n % 4]
            await desk.raise_alert(
                alert(n, customer=f"H{n % 3}", severity=sev, typologies=(f"g{n}", f"t{n % 2}")), now + n
            )
        await desk.move("a01", "assign", "olive", now + 20, assignee="olive")
        await desk.move("a02", "ack", "olive", now + 21)
    finally:
        await client.aclose()


@pytest.fixture(scope="module")
def officer(infra: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    s = isolated(infra, auth_required=True)
    asyncio.run(_setup(s))
    with (
        running_worker(s, tmp_path_factory.mktemp("inbox")) as w,
        httpx.Client(base_url=w.url, timeout=10, headers={"Origin": w.url}) as http,
    ):
        assert http.post("/v1/login", json={"user": "olive", "password": PASSWORD}).status_code == 200
        yield http


def test_the_inbox_filters_counts_and_pages_over_http(officer: httpx.Client) -> None:
    page = officer.get("/v1/alerts", params={"limit": 5}).json()
    assert [a["alert_id"] for a in page["alerts"]] == ["a11", "a10", "a09", "a08", "a07"]
    assert page["counts"] == {"open": 10, "acknowledged": 1, "assigned": 1, "escalated": 0, "resolved": 0}
    assert page["counts_exact"] and not page["partial"]
    rest = officer.get("/v1/alerts", params={"limit": 5, "cursor": page["cursor"]}).json()
    last = officer.get("/v1/alerts", params={"limit": 5, "cursor": rest["cursor"]}).json()
    assert [a["alert_id"] for a in rest["alerts"] + last["alerts"]] == [f"a{n:02d}" for n in range(6, -1, -1)]
    assert last["cursor"] is None and last["next"] is None
    high = officer.get("/v1/alerts", params={"severity": "high", "customer": "H2"}).json()
    assert [a["alert_id"] for a in high["alerts"]] == ["a02"]  # n = 2: high, H2
    assert high["counts"] == {"open": 0, "acknowledged": 1, "assigned": 0, "escalated": 0, "resolved": 0}
    mine = officer.get("/v1/alerts", params={"mine": "true"}).json()
    assert [a["alert_id"] for a in mine["alerts"]] == ["a01"] and mine["alerts"][0]["assignee"] == "olive"
    typ = officer.get("/v1/alerts", params={"typology": "t1", "status": "open"}).json()
    assert [a["alert_id"] for a in typ["alerts"]] == ["a11", "a09", "a07", "a05", "a03"]


@pytest.mark.parametrize(
    ("params", "code", "field"),
    [
        ({"stauts": "open"}, "unknown_parameter", "stauts"),
        ({"status": "closed"}, "invalid_value", "status"),
        ({"severity": "urgent"}, "invalid_value", "severity"),
        ({"limit": "0"}, "invalid_value", "limit"),
        ({"limit": "201"}, "invalid_value", "limit"),
        ({"limit": "ten"}, "wrong_type", "limit"),
        ({"since": "-5"}, "wrong_type", "since"),
        ({"cursor": "garbage"}, "invalid_value", "cursor"),
        ({"cursor": "1:a1", "before": "5"}, "invalid_value", "cursor"),
        ({"mine": "yes"}, "invalid_value", "mine"),
        ({"mine": "true", "assignee": "bob"}, "invalid_value", "mine"),
        ({"customer": "x" * 101}, "invalid_value", "customer"),
    ],
)
def test_bad_query_parameters_are_refused_with_a_code(
    officer: httpx.Client, params: dict[str, str], code: str, field: str
) -> None:
    r = officer.get("/v1/alerts", params=params)
    assert r.status_code == 400 and r.json()["error"]["code"] == code and r.json()["error"]["field"] == field


def test_beside_an_alert_the_customers_earlier_alerts(officer: httpx.Client) -> None:
    d = officer.get("/v1/alerts/a09").json()
    assert [a["alert_id"] for a in d["earlier"]] == ["a06", "a03", "a00"]  # H0's others, newest first
    assert "recent_interactions" in d["customer"]


def test_bulk_acknowledge_checks_each_alert_and_reports_each(officer: httpx.Client) -> None:
    ids = ["a04", "a02", "nope", "a01", "a04", "a08"]  # open, acknowledged, unknown, assigned, again, open
    r = officer.post("/v1/alerts/ack", json={"alert_ids": ids, "note": "morning sweep"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [
        (x["alert_id"], x["ok"], x.get("status"), x.get("error", {}).get("code")) for x in body["results"]
    ] == [
        ("a04", True, "acknowledged", None),
        ("a02", False, None, "not_open"),
        ("nope", False, None, "not_found"),
        ("a01", False, None, "not_open"),
        ("a08", True, "acknowledged", None),
    ]
    assert body["acknowledged"] == 2 and body["refused"] == 3
    trail = officer.get("/v1/alerts/a04").json()["audit"]
    assert [(t["action"], t["who"], t["note"]) for t in trail][-1] == ("ack", "olive", "morning sweep")
    assert (
        officer.post("/v1/alerts/ack", json={"alert_ids": ["a"] * 101}).json()["error"]["field"]
        == "alert_ids"
    )


def test_a_viewer_reads_the_inbox_but_cannot_acknowledge(officer: httpx.Client) -> None:
    with httpx.Client(base_url=officer.base_url, timeout=10, headers=officer.headers) as viewer:
        assert viewer.post("/v1/login", json={"user": "vic", "password": PASSWORD}).status_code == 200
        assert viewer.get("/v1/alerts", params={"status": "open"}).status_code == 200
        r = viewer.post("/v1/alerts/ack", json={"alert_ids": ["a05"]})
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        assert viewer.get("/v1/alerts", params={"mine": "true"}).json()["alerts"] == []
