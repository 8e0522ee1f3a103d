"""HTTP API of the alert desk (values in, Reply out; routing lives in agents/web.py).

The audit trail records the logged-in person; with authentication off (development),
the name given as ``by`` in the request body.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from engine.errors import StoreError
from engine.http.api import Reply, error
from engine.service.metrics import Metrics
from engine.store.alerts import DISPOSITIONS, STATUSES, AlertFilter, AlertMoveError, labels_of
from engine.store.base import AlertInbox, CustomerState

_ACTIONS = ("ack", "assign", "escalate", "resolve", "snooze")
_NAME_MAX = 100
_NOTE_MAX = 2000


@dataclass
class AlertApi:
    desk: AlertInbox
    store: CustomerState
    publish_labels: Callable[[list[dict[str, Any]]], Awaitable[None]]
    metrics: Metrics | None = None

    async def find(self, query: Mapping[str, str]) -> Reply:
        status = query.get("status")
        if status is not None and status not in STATUSES:
            return error(400, "invalid_value", f"status is one of {', '.join(STATUSES)}", "status")
        try:
            limit = min(max(int(query.get("limit", "50")), 1), 200)
            before = int(query["before"]) if "before" in query else None
            since = int(query["since"]) if "since" in query else None
            until = int(query["until"]) if "until" in query else None
        except ValueError:
            return error(400, "wrong_type", "limit, before, since and until are whole numbers (ms)")
        flt = AlertFilter(status, query.get("severity"), query.get("typology"), query.get("assignee"),
                          query.get("customer"), since, until)  # fmt: skip
        try:
            found = await self.desk.find(flt, limit, before)
        except StoreError as exc:
            return error(503, "state_unavailable", str(exc))
        page = {
            "alerts": [_summary(a) for a in found.alerts],
            "next": found.next_before_ms,  # pass as ?before= for the next page
            "partial": found.partial,  # the scan stopped before the page filled: go on with next
        }
        return Reply(200, orjson.dumps(page))

    async def detail(self, alert_id: str) -> Reply:
        """The alert with its context frozen at alert time, its audit trail, and the
        customer's unified view as it is now."""
        try:
            doc = await self.desk.get(alert_id)
            if doc is None:
                return error(404, "not_found", f"no alert {alert_id}")
            trail = await self.desk.audit(alert_id)
            view = await self.store.customer_view(doc["customer_id"])
        except StoreError as exc:
            return error(503, "state_unavailable", str(exc))
        return Reply(200, orjson.dumps({"alert": doc, "audit": trail, "customer": view}))

    async def act(self, alert_id: str, action: str, body: bytes, actor: str | None = None) -> Reply:
        """``actor``: the logged-in person; without authentication, ``by`` in the body."""
        if action not in _ACTIONS:
            return error(404, "not_found", f"no action {action}; use {', '.join(_ACTIONS)}")
        try:
            data = orjson.loads(body or b"{}")
        except orjson.JSONDecodeError:
            return error(400, "invalid_json", "the body is not JSON")
        who, note = actor or data.get("by"), data.get("note", "")
        if not isinstance(who, str) or not 0 < len(who) <= _NAME_MAX:
            return error(400, "missing_field", "`by` names who acts (recorded in the audit trail)", "by")
        if not isinstance(note, str) or len(note) > _NOTE_MAX:
            return error(400, "invalid_value", f"note is text of at most {_NOTE_MAX} characters", "note")
        now = time.time()
        try:
            if action == "snooze":
                return await self._snooze(alert_id, who, note, data, now)
            disposition = data.get("disposition", "")
            if action == "resolve" and disposition not in DISPOSITIONS:
                return error(
                    400, "invalid_value", f"disposition is one of {', '.join(DISPOSITIONS)}", "disposition"
                )
            assignee = data.get("assignee", "") if action == "assign" else ""
            doc = await self.desk.move(
                alert_id, action, who, int(now * 1000), note, str(assignee), disposition
            )
            self._observe(action, doc, int(now * 1000))
            if action == "resolve":
                await self.publish_labels(list(labels_of(doc, disposition, now)))
        except AlertMoveError as exc:
            status = 404 if exc.code == "not_found" else 409
            return error(status, exc.code, f"cannot {action} alert {alert_id}: {exc.code.replace('_', ' ')}")
        except StoreError as exc:
            return error(503, "state_unavailable", str(exc))
        return Reply(200, orjson.dumps({"alert": doc}))

    def _observe(self, action: str, doc: Mapping[str, Any], now_ms: int) -> None:
        if self.metrics is None:
            return
        m, severity = self.metrics, str(doc.get("severity"))
        m.desk_moves.labels(action, severity, "officer").inc()
        age_s = max(now_ms - int(doc.get("created") or now_ms), 0) / 1000
        if doc.get("acked") == now_ms:  # this move took it in hand for the first time
            m.time_to_ack.labels(severity).observe(age_s)
        if action == "resolve":
            m.time_to_resolve.labels(severity, str(doc.get("disposition"))).observe(age_s)

    async def _snooze(self, alert_id: str, who: str, note: str, data: Mapping[str, Any], now: float) -> Reply:
        minutes = data.get("minutes")
        if isinstance(minutes, bool) or not isinstance(minutes, int) or not 1 <= minutes <= 90 * 24 * 60:
            return error(400, "invalid_value", "minutes is a whole number from 1 to 129600", "minutes")
        if not note:
            return error(400, "missing_field", "a snooze needs a note saying why", "note")
        doc = await self.desk.get(alert_id)
        if doc is None:
            return error(404, "not_found", f"no alert {alert_id}")
        for rule in doc["rule_ids"]:
            await self.desk.snooze(doc["customer_id"], rule, minutes * 60)
        await self.desk.note(alert_id, who, int(now * 1000), "snooze", f"{minutes} min: {note}")
        return Reply(
            200, orjson.dumps({"alert": doc, "snoozed": {"rules": doc["rule_ids"], "minutes": minutes}})
        )


def _summary(doc: Mapping[str, Any]) -> dict[str, Any]:
    keep = ("alert_id", "status", "severity", "customer_id", "group", "typologies", "rule_ids", "count",
            "created", "updated", "assignee", "disposition")  # fmt: skip
    out = {k: doc.get(k) for k in keep}
    out["reason"] = (doc.get("context") or {}).get("reason")
    return out
