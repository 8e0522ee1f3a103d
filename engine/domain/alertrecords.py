"""Records of ``risk.alerts`` as the alert desk accepts them, checked before Redis. Pure.

The desk's raise script concatenates and compares some fields: a record without them,
or with a severity it cannot order, would fail there on every retry and hold back every
alert behind it. Such a record is refused here with a reason, and the desk sends it to
``risk.alerts.dlq``. The worker's own announcements (SLA escalations) share the topic and
are recognised, not refused.

>>> parse_alert_record(b'{"alert_id": "a1", "customer_id": "C1", "rule_id": "r", '
...                    b'"reason": "why", "severity": "high"}')["severity"]
'high'
>>> parse_alert_record(b'{"event": "escalation", "alert_id": "a1"}') is None
True
>>> try:
...     parse_alert_record(b'{"alert_id": "a1", "customer_id": "C1", "rule_id": "r", "severity": "high"}')
... except EventError as err:
...     print(err.code, err.field)
invalid_alert reason
"""

from __future__ import annotations

from typing import Any

import orjson

from engine.errors import EventError

SEVERITIES = ("low", "medium", "high", "critical")
_TEXT_FIELDS = ("alert_id", "customer_id", "rule_id", "reason")
_MAX_TEXT = 1000


def parse_alert_record(raw: bytes) -> dict[str, Any] | None:
    """The record as a dict, None for an escalation announcement; EventError otherwise."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise EventError("invalid_alert", "not JSON") from None
    if not isinstance(body, dict):
        raise EventError("invalid_alert", "not a JSON object")
    if body.get("event") == "escalation":
        return None
    for name in _TEXT_FIELDS:
        value = body.get(name)
        if not isinstance(value, str) or not value or len(value) > _MAX_TEXT:
            raise EventError("invalid_alert", f"{name} must be a non-empty string", name)
    if body.get("severity") not in SEVERITIES:
        raise EventError("invalid_alert", f"severity must be one of {', '.join(SEVERITIES)}", "severity")
    typologies = body.get("typologies")
    if typologies is not None and not (
        isinstance(typologies, list) and all(isinstance(t, str) and t for t in typologies)
    ):
        raise EventError("invalid_alert", "typologies must be a list of non-empty strings", "typologies")
    return body
