"""The risk officers' alert desk in Redis: lifecycle, grouping, SLA escalation, snooze
and an append-only audit trail.

Alerts arrive on ``risk.alerts`` (one per fired rule); the desk groups those of one
customer and typology (or rule, when it has none) within ``alert_group_window_s`` into
one alert with a count and every triggering event. States: open -> acknowledged /
assigned / escalated -> resolved (disposition fraud, legitimate or needs_information).
Every change is one Lua script that checks the move and appends to the alert's audit
trail in the same step; the trail is never rewritten.

Keys: :class:`engine.store.keys.DeskKeys` (one slot for the whole desk); a snooze sets
the commit script's suppression key, :func:`engine.store.keys.suppression`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import orjson
import redis.asyncio as aioredis

from engine.errors import BeaconError
from engine.store import keys
from engine.store.changefeed import ChangeFeed
from engine.store.layout import KeyLayout
from engine.store.redisio import guarded, text

DISPOSITIONS = ("fraud", "legitimate", "needs_information")
STATUSES = ("open", "acknowledged", "assigned", "escalated", "resolved")
_EVENTS_KEPT = 50
_SCAN_MAX = 2000  # alerts read per listing request at most
_SCRIPT_READS = 500  # entries one script call reads at most (Redis does nothing else meanwhile)


class AlertMoveError(BeaconError):
    """A state change the lifecycle does not allow (code: machine-readable reason)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass(frozen=True)
class AlertFilter:
    status: str | None = None
    severity: str | None = None
    typology: str | None = None
    assignee: str | None = None
    customer: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None

    def indexes(self, desk: keys.DeskKeys, with_status: bool = True) -> list[str]:
        """The index zsets an alert this filter admits is in (the time bounds apart)."""
        named = (("st", self.status if with_status else None), ("sv", self.severity),
                 ("ty", self.typology), ("as", self.assignee), ("cu", self.customer))  # fmt: skip
        return [desk.index(dim, value) for dim, value in named if value is not None]

    def admits(self, doc: Mapping[str, Any]) -> bool:
        typologies = doc.get("typologies") or []
        return (
            (self.status is None or doc.get("status") == self.status)
            and (self.severity is None or doc.get("severity") == self.severity)
            and (self.typology is None or self.typology in typologies or doc.get("group") == self.typology)
            and (self.assignee is None or doc.get("assignee") == self.assignee)
            and (self.customer is None or doc.get("customer_id") == self.customer)
        )


@dataclass(frozen=True)
class AlertPage:
    """One page of a listing: ``next_before_ms`` is the cursor of the next page (None at
    the end); ``partial`` when the scan bound stopped the page before it was full."""

    alerts: list[dict[str, Any]]
    next_before_ms: int | None
    partial: bool = False
    cursor: str | None = None  # '<created ms>:<alert id>' of the last alert read: exact paging


def parse_cursor(cursor: str) -> tuple[int, str]:
    """A page cursor as (created ms, alert id); ValueError when it is not one.

    >>> parse_cursor("1795428000000:a:1")
    (1795428000000, 'a:1')
    """
    ms, sep, alert_id = cursor.partition(":")
    if not sep or not alert_id or not ms.isdigit() or len(ms) > 15:
        raise ValueError(cursor)
    return int(ms), alert_id


class AlertDesk:
    def __init__(self, client: aioredis.Redis, key_prefix: str, retention_s: int, group_window_s: int,
                 sla_s: Mapping[str, float], layout: KeyLayout | None = None) -> None:  # fmt: skip
        self._r = client
        self.key_prefix = key_prefix
        # Where the customers' keys are (the suppression keys are theirs): one Redis unless told.
        self.layout = layout or KeyLayout.of(key_prefix, cluster=False, groups=1)
        self.keys = keys.DeskKeys.of(key_prefix)
        self.retention_s = retention_s
        self.group_window_s = group_window_s
        self.sla_s = dict(sla_s)
        self.channel = self.keys.channel  # pub/sub: every raise, group and move
        self._feed = ChangeFeed(client, self.channel)
        lua = resources.files("engine.store").joinpath("lua")
        self._raise = client.register_script(lua.joinpath("alert_raise.lua").read_text())
        self._move = client.register_script(lua.joinpath("alert_move.lua").read_text())
        self._find = client.register_script(lua.joinpath("alert_find.lua").read_text())
        self._count = client.register_script(lua.joinpath("alert_count.lua").read_text())
        self._reindex = client.register_script(lua.joinpath("alert_reindex.lua").read_text())
        self._indexed = False
        self._ix = [self.keys.index(dim) for dim in keys.INDEX_DIMS]

    async def raise_alert(self, alert: Mapping[str, Any], now_ms: int) -> tuple[str, str]:
        """Record one alert record of ``risk.alerts``; returns (desk alert id, raised|grouped|repeat)."""
        record = dict(alert)
        typologies = list(record.get("typologies") or [])
        record["group"] = typologies[0] if typologies else record["rule_id"]
        sla = self.sla_s.get(str(record.get("severity")), 0.0)
        deadline = now_ms + int(sla * 1000) if sla > 0 else 0
        k = self.keys
        script_keys = [k.seen, k.alerts, k.audits, k.groups, k.by_time, k.sla, k.backlog, *self._ix]
        args: list[bytes | int | str] = [
            orjson.dumps(record),
            self.group_window_s,
            now_ms,
            self.retention_s,
            deadline,
            _EVENTS_KEPT,
            self.channel,
        ]
        reply = await self._call(self._raise(keys=script_keys, args=args))
        return text(reply[0]), text(reply[1])

    async def move(self, alert_id: str, action: str, who: str, now_ms: int, note: str = "",
                   assignee: str = "", disposition: str = "") -> dict[str, Any]:  # fmt: skip
        k = self.keys
        script_keys = [k.alert(alert_id), k.audit(alert_id), k.sla, k.backlog, k.index("st"), k.index("as")]
        args: list[str | int] = [action, who, now_ms, note, assignee, disposition, self.channel,
                                 self.retention_s]  # fmt: skip
        reply = await self._call(self._move(keys=script_keys, args=args))
        if text(reply[0]) == "error":
            raise AlertMoveError(text(reply[1]))
        return _doc(orjson.loads(reply[1]))

    async def backlog(self) -> dict[tuple[str, str], int]:
        """Unresolved alerts by (severity, status), kept by the raise and move scripts.
        Alerts that expire unresolved (after ``retention_s``) stay counted: at 90 days,
        a backlog that old is itself the finding."""
        raw = await self._call(self._r.hgetall(self.keys.backlog))
        out: dict[tuple[str, str], int] = {}
        for key, value in raw.items():
            severity, _, status = text(key).partition("|")
            out[(severity, status)] = int(value)
        return out

    async def get(self, alert_id: str) -> dict[str, Any] | None:
        raw = await self._call(self._r.get(self.keys.alert(alert_id)))
        return _doc(orjson.loads(raw)) if raw else None

    async def audit(self, alert_id: str) -> list[dict[str, Any]]:
        raw = await self._call(self._r.lrange(self.keys.audit(alert_id), 0, -1))
        return [orjson.loads(r) for r in raw]

    async def find(self, flt: AlertFilter, limit: int = 50, before_ms: int | None = None,
                   scan_max: int = _SCAN_MAX, cursor: str | None = None) -> AlertPage:  # fmt: skip
        """Newest first, in a stable order (created ms, then id); ``cursor`` (a page's
        ``cursor``) or ``before_ms`` says where the page starts. Script calls of at most
        500 entries each walk the smallest index the filter names, at most ``scan_max``
        entries in all, so a filter that matches little costs a bounded slice, not the
        whole desk: the page is then ``partial`` and its cursor says where to go on."""
        await self.ensure_indexed()
        hi: str = "+inf" if flt.until_ms is None else str(flt.until_ms)
        after_id = ""
        if cursor is not None:
            ms, after_id = parse_cursor(cursor)
            hi = str(ms) if flt.until_ms is None else str(min(ms, flt.until_ms))
            after_id = after_id if hi == str(ms) else ""
        elif before_ms is not None:
            hi = f"({before_ms}" if flt.until_ms is None or before_ms <= flt.until_ms else hi
        lo = "-inf" if flt.since_ms is None else str(flt.since_ms)
        script_keys = [self.keys.by_time, self.keys.alerts, *flt.indexes(self.keys)]
        docs: list[dict[str, Any]] = []
        while True:  # slices of _SCRIPT_READS entries, so no one call holds Redis long
            budget = min(_SCRIPT_READS, scan_max)
            args: list[str | int] = [limit - len(docs), hi, after_id, lo, budget]
            reply = await self._call(self._find(keys=script_keys, args=args))
            (at_ms, at_id, partial), raws = reply[0], reply[1:]
            docs += [_doc(orjson.loads(raw)) for raw in raws]
            scan_max -= budget
            if not text(at_ms):
                return AlertPage(docs, None)
            ms = int(float(text(at_ms)))
            if not partial or scan_max <= 0:
                return AlertPage(docs, ms, bool(partial), f"{ms}:{text(at_id)}")
            hi, after_id = str(ms), text(at_id)

    async def counts(
        self, flt: AlertFilter, now_ms: int, scan_max: int = _SCRIPT_READS
    ) -> tuple[dict[str, int], bool]:
        """Alerts per status among those the filter admits but for its status, and whether
        the counts are exact: each walks the smaller of its status's index and the filter's
        indexes, at most ``scan_max`` entries (engine/store/lua/alert_count.lua)."""
        await self.ensure_indexed()
        lo = now_ms - self.retention_s * 1000
        lo = lo if flt.since_ms is None else max(lo, flt.since_ms)
        hi = "+inf" if flt.until_ms is None else str(flt.until_ms)
        script_keys = [self.keys.index("st"), *flt.indexes(self.keys, with_status=False)]
        reply = await self._call(self._count(keys=script_keys, args=[lo, hi, scan_max, *STATUSES]))
        return dict(zip(STATUSES, (int(n) for n in reply[1:]), strict=True)), bool(reply[0])

    async def ensure_indexed(self, chunk: int = 25) -> None:
        """Add the alerts recorded before the inbox's indexes existed to them, once per
        desk (the first listing after an upgrade; idempotent, so workers may race)."""
        if self._indexed:
            return
        if not await self._call(self._r.exists(self.keys.indexed)):
            first = 0
            while True:
                args = [first, chunk, self.retention_s]
                script_keys = [self.keys.by_time, self.keys.alerts, *self._ix]
                n = await self._call(self._reindex(keys=script_keys, args=args))
                first += int(n)
                if int(n) < chunk:
                    break
            await self._call(self._r.set(self.keys.indexed, "1"))
        self._indexed = True

    async def note(self, alert_id: str, who: str, now_ms: int, action: str, note: str) -> None:
        """An entry in the audit trail that changes no state (a snooze, for one)."""
        entry = {"at": now_ms, "who": who, "action": action, "from": None, "to": None, "note": note}
        await self._call(self._r.rpush(self.keys.audit(alert_id), orjson.dumps(entry)))

    async def due_escalations(self, now_ms: int) -> list[str]:
        """Alerts whose SLA ran out while still open."""
        ids = await self._call(self._r.zrangebyscore(self.keys.sla, "-inf", now_ms, start=0, num=100))
        return [text(i) for i in ids]

    async def snooze(self, customer_id: str, rule_id: str, seconds: int) -> None:
        """No alert of this rule for this customer for a while (the commit script's
        suppression key: the verdict still applies, only the alert is held back)."""
        key = self.layout.suppression(customer_id, rule_id)
        await self._call(self._r.set(key, "snoozed", ex=seconds))

    def changes(self) -> contextlib.AbstractAsyncContextManager[AsyncIterator[dict[str, Any] | None]]:
        """Alert changes as they happen (for the live inbox): raised, grouped, each move.
        One Redis subscription per worker however many listen (engine/store/changefeed.py)."""
        return self._feed.listen()

    async def _call(self, awaitable: Any) -> Any:
        return await guarded("alert desk", awaitable)


def _doc(doc: dict[str, Any]) -> dict[str, Any]:
    # cjson writes an empty Lua table as {}: lists that are empty come back as objects.
    for key in ("typologies", "rule_ids", "events"):
        if isinstance(doc.get(key), dict):
            doc[key] = []
    return doc


def labels_of(doc: Mapping[str, Any], disposition: str, now_s: float) -> Sequence[dict[str, Any]]:
    """Feedback records a disposition teaches the fraud model: one per triggering event."""
    if disposition not in ("fraud", "legitimate"):
        return []
    return [
        {
            "kind": "fraud",
            "event_id": e["event_id"],
            "channel": e["channel"],
            "label": disposition == "fraud",
            "customer_id": doc["customer_id"],
            "ts": now_s,
            "source": "disposition",
        }
        for e in doc.get("events") or []
    ]
