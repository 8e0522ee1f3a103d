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

    async def raise_alert(self, alert: Mapping[str, Any], now_ms: int) -> tuple[str, str]:
        """Record one alert record of ``risk.alerts``; returns (desk alert id, raised|grouped|repeat)."""
        record = dict(alert)
        typologies = list(record.get("typologies") or [])
        record["group"] = typologies[0] if typologies else record["rule_id"]
        sla = self.sla_s.get(str(record.get("severity")), 0.0)
        deadline = now_ms + int(sla * 1000) if sla > 0 else 0
        k = self.keys
        script_keys = [k.seen, k.alerts, k.audits, k.groups, k.by_time, k.sla, k.backlog]
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
        script_keys = [k.alert(alert_id), k.audit(alert_id), k.sla, k.backlog]
        args: list[str | int] = [action, who, now_ms, note, assignee, disposition, self.channel]
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

    async def find(
        self, flt: AlertFilter, limit: int = 50, before_ms: int | None = None, scan_max: int = _SCAN_MAX
    ) -> AlertPage:
        """Newest first; ``before_ms`` is the paging cursor. At most ``scan_max`` alerts are
        read per call, so a filter that matches little costs a bounded slice of the index,
        not all of it: the page is then ``partial`` and its cursor says where to go on."""
        hi: Any = (
            f"({before_ms}"
            if before_ms is not None
            else (flt.until_ms if flt.until_ms is not None else "+inf")
        )
        lo: Any = flt.since_ms if flt.since_ms is not None else "-inf"
        out: list[dict[str, Any]] = []
        scanned = 0
        while scanned < scan_max:
            ids = await self._call(
                self._r.zrevrangebyscore(
                    self.keys.by_time, hi, lo, start=0, num=min(200, scan_max - scanned), withscores=True
                )
            )
            if not ids:
                return AlertPage(out, None)
            scanned += len(ids)
            docs = await self._call(self._r.mget([self.keys.alert(text(i)) for i, _ in ids]))
            for raw in docs:
                doc = _doc(orjson.loads(raw)) if raw else None
                if doc is not None and flt.admits(doc):
                    out.append(doc)
                    if len(out) == limit:
                        return AlertPage(out, int(doc["created"]))
            hi = f"({int(ids[-1][1])}"
        return AlertPage(out, int(ids[-1][1]), partial=True)

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
