"""The alert desk's Faust side: alerts from ``risk.alerts`` into the desk, the SLA timer,
and disposition labels out to ``feedback``. Logic lives in engine/alertdesk.py."""

from __future__ import annotations

import logging
import time
from typing import Any

import faust
import orjson

from agents.bulk import BulkProducer
from engine.alert_api import AlertApi
from engine.alertdesk import AlertMoveError
from engine.errors import ConfigError, StoreError
from engine.runtime import Runtime
from engine.webhooks import WebhookSender, parse_targets

log = logging.getLogger("beacon.desk")
_SLA_TICK_S = 5.0


def register_desk(app: faust.App, rt: Runtime, bulk: BulkProducer) -> AlertApi:
    s = rt.settings
    alerts = app.topic(s.topic("risk.alerts"), key_type=bytes, value_type=bytes)
    targets = parse_targets(s.alert_webhooks)
    if targets.by_severity and not s.alert_webhook_secret:
        raise ConfigError("alert_webhooks need alert_webhook_secret (receivers verify the signature with it)")
    hooks = WebhookSender(targets, s.alert_webhook_secret, rt.metrics.webhook_failures)

    @app.agent(alerts, name="alert-desk")
    async def desk_agent(stream: Any) -> None:
        async for raw in stream:
            body = orjson.loads(raw)
            if body.get("event") == "escalation":  # our own announcement, not an alert
                continue
            try:
                alert_id, change = await rt.desk.raise_alert(body, int(time.time() * 1000))
            except StoreError:
                extra = {"alert_id": body.get("alert_id"), "customer_id": body.get("customer_id")}
                log.exception(
                    "alert %s not recorded; it will be redelivered", body.get("alert_id"), extra=extra
                )
                raise
            if change in ("raised", "grouped"):  # not a redelivery
                typologies = body.get("typologies") or ["none"]
                rt.metrics.desk_alerts.labels(str(body.get("severity")), str(typologies[0]), change).inc()
            if change == "raised":  # a new alert, not one more event of an open one
                hooks.notify(str(body.get("severity")), {"event": "raised", "alert_id": alert_id, **body})

    @app.timer(interval=_SLA_TICK_S)
    async def escalate_overdue() -> None:
        now_ms = int(time.time() * 1000)
        for alert_id in await rt.desk.due_escalations(now_ms):
            try:
                doc = await rt.desk.move(alert_id, "escalate", "sla", now_ms, "not acknowledged in time")
            except AlertMoveError:
                continue  # another worker escalated it, or someone acted on it meanwhile
            rt.metrics.desk_moves.labels("escalate", doc["severity"], "sla").inc()
            event = {"event": "escalation", "alert_id": alert_id, "severity": doc["severity"],
                     "customer_id": doc["customer_id"], "at": now_ms}  # fmt: skip
            await bulk.send(s.topic("risk.alerts"), doc["customer_id"].encode(), orjson.dumps(event))
            hooks.notify(doc["severity"], event)
        await export_backlog(rt)

    async def publish_labels(labels: list[dict[str, Any]]) -> None:
        for label in labels:
            await bulk.send(s.topic("feedback"), str(label["customer_id"]).encode(), orjson.dumps(label))

    return AlertApi(rt.desk, rt.service.store, publish_labels, rt.metrics)


async def export_backlog(rt: Runtime) -> None:
    """The desk's unresolved alerts as gauges (every worker exports the same numbers)."""
    try:
        backlog = await rt.desk.backlog()
    except StoreError:
        return  # counted where the state path meets Redis; the gauges keep their last values
    for (severity, status), count in backlog.items():
        rt.metrics.alerts_open.labels(severity, status).set(count)
