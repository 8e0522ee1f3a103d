"""The inbox of a busy desk against a real Redis (issue 19, item 5): the indexes the raise
and move scripts keep, exact paging by cursor when alerts share a millisecond, counts per
status, and alerts recorded before the indexes existed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from engine.settings import Settings
from engine.store.alerts import AlertDesk, AlertFilter
from engine.store.redisio import connect
from tests.helpers import isolated

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
    counts, exact = await desk.counts(AlertFilter(severity="high"), NOW + 20, scan_max=1)
    assert not exact and sum(counts.values()) == 1


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
