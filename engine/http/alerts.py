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

from engine.domain.alertrecords import SEVERITIES
from engine.errors import StoreError
from engine.http.api import Reply, error
from engine.service.metrics import Metrics
from engine.store.alerts import DISPOSITIONS, STATUSES, AlertFilter, AlertMoveError, labels_of, parse_cursor
from engine.store.base import AlertInbox, CustomerState

_ACTIONS = ("ack", "assign", "escalate", "resolve", "snooze")
_NAME_MAX = 100
_NOTE_MAX = 2000
_EARLIER = 10  # the customer's other alerts shown beside one
BULK_MAX = 100  # alerts acknowledged in one request at most
PAGE_MAX = 200
_PARAMS = ("status", "severity", "typology", "assignee", "customer", "mine", "since", "until", "limit",
           "before", "cursor")  # fmt: skip


def parse_query(
    query: Mapping[str, str], actor: str | None
) -> tuple[AlertFilter, int, int | None, str | None] | Reply:
    """The inbox's query parameters as (filter, page size, before ms, cursor), or a 400
    naming the parameter.

    >>> flt, limit, before, cursor = parse_query({"severity": "high", "mine": "true", "limit": "20"}, "ann")
    >>> flt.severity, flt.assignee, limit
    ('high', 'ann', 20)
    >>> import orjson
    >>> orjson.loads(parse_query({"stauts": "open"}, None).body)["error"]["code"]
    'unknown_parameter'
    >>> orjson.loads(parse_query({"limit": "1000"}, None).body)["error"]["field"]
    'limit'
    """
    for name in query:
        if name not in _PARAMS:
            return error(
                400, "unknown_parameter", f"{name} is not a parameter; use {', '.join(_PARAMS)}", name
            )
    choices = {"status": STATUSES, "severity": SEVERITIES}
    for name, allowed in choices.items():
        if name in query and query[name] not in allowed:
            return error(400, "invalid_value", f"{name} is one of {', '.join(allowed)}", name)
    for name in ("typology", "assignee", "customer"):
        if name in query and not 0 < len(query[name]) <= _NAME_MAX:
            return error(400, "invalid_value", f"{name} is 1 to {_NAME_MAX} characters", name)
    numbers: dict[str, int] = {}
    for name in ("limit", "before", "since", "until"):
        if name in query:
            value = query[name]
            if not value.isdigit() or len(value) > 15:
                return error(
                    400,
                    "wrong_type",
                    f"{name} is a whole number" + (" (ms)" if name != "limit" else ""),
                    name,
                )
            numbers[name] = int(value)
    limit = numbers.get("limit", 50)
    if not 1 <= limit <= PAGE_MAX:
        return error(400, "invalid_value", f"limit is from 1 to {PAGE_MAX}", "limit")
    cursor = query.get("cursor")
    if cursor is not None:
        if "before" in query:
            return error(400, "invalid_value", "give cursor or before, not both", "cursor")
        try:
            parse_cursor(cursor)
        except ValueError:
            return error(400, "invalid_value", "cursor is a page's `cursor` as given", "cursor")
    assignee = query.get("assignee")
    mine = query.get("mine", "false")
    if mine not in ("true", "false"):
        return error(400, "invalid_value", "mine is true or false", "mine")
    if mine == "true":
        if actor is None:
            return error(400, "invalid_value", "mine needs a logged-in person", "mine")
        if assignee is not None and assignee != actor:
            return error(400, "invalid_value", "give mine or assignee, not both", "mine")
        assignee = actor
    flt = AlertFilter(query.get("status"), query.get("severity"), query.get("typology"), assignee,
                      query.get("customer"), numbers.get("since"), numbers.get("until"))  # fmt: skip
    return flt, limit, numbers.get("before"), cursor


@dataclass
class AlertApi:
    desk: AlertInbox
    store: CustomerState
    publish_labels: Callable[[list[dict[str, Any]]], Awaitable[None]]
    metrics: Metrics | None = None

    async def find(self, query: Mapping[str, str], actor: str | None = None) -> Reply:
        """One page of the inbox and the counts per status the filter (but its status)
        admits; ``actor``: the logged-in person, whom ``mine=true`` names."""
        parsed = parse_query(query, actor)
        if isinstance(parsed, Reply):
            return parsed
        flt, limit, before, cursor = parsed
        try:
            found = await self.desk.find(flt, limit, before, cursor=cursor)
            counts, exact = await self.desk.counts(flt, int(time.time() * 1000))
        except StoreError as exc:
            return error(503, "state_unavailable", str(exc))
        page = {
            "alerts": [_summary(a) for a in found.alerts],
            "cursor": found.cursor,  # pass as ?cursor= for the next page (None: the last page)
            "next": found.next_before_ms,  # the older form: ?before= (skips alerts of the same ms)
            "partial": found.partial,  # the scan stopped before the page filled: go on with cursor
            "counts": counts,  # per status, among the alerts the other filters admit
            "counts_exact": exact,
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
            mine = await self.desk.find(AlertFilter(customer=doc["customer_id"]), _EARLIER + 1)
        except StoreError as exc:
            return error(503, "state_unavailable", str(exc))
        earlier = [_summary(a) for a in mine.alerts if a["alert_id"] != alert_id][:_EARLIER]
        body = {"alert": doc, "audit": trail, "customer": view, "earlier": earlier}
        return Reply(200, orjson.dumps(body))

    async def ack_many(self, body: bytes, actor: str | None = None) -> Reply:
        """Acknowledge several alerts in one request: each move is checked on its own, and
        the answer says per alert whether it was taken (200 even when some were not)."""
        try:
            data = orjson.loads(body or b"{}")
        except orjson.JSONDecodeError:
            return error(400, "invalid_json", "the body is not JSON")
        if not isinstance(data, dict):
            return error(400, "invalid_json", "the body is a JSON object")
        ids, who, note = data.get("alert_ids"), actor or data.get("by"), data.get("note", "")
        if (
            not isinstance(ids, list)
            or not 0 < len(ids) <= BULK_MAX
            or not all(isinstance(i, str) and 0 < len(i) <= _NAME_MAX for i in ids)
        ):
            return error(
                400, "invalid_value", f"alert_ids is a list of 1 to {BULK_MAX} alert ids", "alert_ids"
            )
        if not isinstance(who, str) or not 0 < len(who) <= _NAME_MAX:
            return error(400, "missing_field", "`by` names who acts (recorded in the audit trail)", "by")
        if not isinstance(note, str) or len(note) > _NOTE_MAX:
            return error(400, "invalid_value", f"note is text of at most {_NOTE_MAX} characters", "note")
        results: list[dict[str, Any]] = []
        for alert_id in dict.fromkeys(ids):  # once each, in the order given
            now_ms = int(time.time() * 1000)
            try:
                doc = await self.desk.move(alert_id, "ack", who, now_ms, note)
            except AlertMoveError as exc:
                results.append({"alert_id": alert_id, "ok": False, "error": {"code": exc.code}})
                continue
            except StoreError:
                results.append({"alert_id": alert_id, "ok": False, "error": {"code": "state_unavailable"}})
                continue
            self._observe("ack", doc, now_ms)
            results.append({"alert_id": alert_id, "ok": True, "status": doc["status"]})
        done = sum(1 for r in results if r["ok"])
        return Reply(
            200, orjson.dumps({"results": results, "acknowledged": done, "refused": len(results) - done})
        )

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
