"""The alert desk's Faust side: alerts from ``risk.alerts`` into the desk, the SLA timer,
and disposition labels out to ``feedback``. Logic lives in engine/store/alerts.py."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import Any

import faust
import orjson
from aiokafka.errors import KafkaError

from agents.bulk import BulkProducer
from agents.deadletter import send_dead_letter
from engine.domain.alertrecords import parse_alert_record
from engine.errors import EventError, StoreError
from engine.http.alerts import AlertApi
from engine.http.webhooks import WebhookSender, load_receivers
from engine.service.runtime import Runtime
from engine.store.alerts import AlertMoveError
from engine.store.hookbox import HookBox

log = logging.getLogger("beacon.desk")
_SLA_TICK_S = 5.0
_SCRIPT_ATTEMPTS = 3
_TRANSIENT_REPLIES = ("OOM", "BUSY", "LOADING", "READONLY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN")


def register_desk(app: faust.App, rt: Runtime, bulk: BulkProducer) -> AlertApi:
    s = rt.settings
    alerts = app.topic(s.topic("risk.alerts"), key_type=bytes, value_type=bytes)
    receivers = load_receivers(s.alert_webhook_receivers, s.alert_webhook_allow_http)
    hooks = WebhookSender(receivers, HookBox(rt.redis, s.key_prefix), rt.metrics, s.alert_webhook_horizon_s,
                          s.alert_webhook_retry_s, s.alert_webhook_visibility_s, s.console_url)  # fmt: skip

    if receivers:

        @app.task
        async def deliver_webhooks() -> None:
            """Every worker's loop; stopping it loses nothing (the deliveries are in Redis)."""
            await hooks.run()

    async def notify(severity: str, payload: dict[str, Any]) -> None:
        """Enqueued in Redis before the record is acknowledged, waiting while it is away."""
        for attempt in itertools.count():
            try:
                return await hooks.notify(severity, payload)
            except StoreError as exc:
                log.warning("webhook for alert %s not queued (%s); retrying", payload.get("alert_id"), exc)
                await asyncio.sleep(min(0.1 * 2**attempt, 2.0))

    dlq = s.topic("risk.alerts.dlq")
    signer = bulk.signer

    async def dead_letter(message: Any, raw: bytes, err: EventError) -> None:
        """Awaited before the next record, retried while the broker is unavailable: the
        input is acknowledged only once its copy is kept."""
        rt.metrics.dlq.labels("desk", err.code).inc()
        log.error("alert record refused (%s: %s); sent to %s", err.code, err.message, dlq)
        for attempt in itertools.count():
            try:
                await (await send_dead_letter(bulk, dlq, message, raw, err))
                return
            except KafkaError as exc:
                log.warning("dead-letter copy not delivered (%s); retrying", exc)
                await asyncio.sleep(min(0.1 * 2**attempt, 2.0))

    @app.agent(alerts, name="alert-desk")
    async def desk_agent(stream: Any) -> None:
        async for raw in stream:
            try:
                message = stream.current_event.message
                refused = signer.refusal(message.topic, message.key, raw, message.headers)
                if refused is not None:  # a forged or unsigned alert never reaches the inbox
                    rt.metrics.records_refused.labels(message.topic, refused).inc()
                    raise EventError(refused, "record not signed by a trusted producer")
                body = parse_alert_record(raw)
                if body is None:  # our own announcement (an SLA escalation), not an alert
                    continue
                alert_id, change = await _raise_until_recorded(rt, body)
            except EventError as err:
                await dead_letter(stream.current_event.message, raw, err)
                continue
            if change in ("raised", "grouped"):  # not a redelivery
                typologies = body.get("typologies") or ["none"]
                rt.metrics.desk_alerts.labels(str(body.get("severity")), str(typologies[0]), change).inc()
            # A new alert, not one more event of an open one; or the record that raised it read
            # again (the worker stopped before acknowledging it): enqueueing is idempotent.
            if change == "raised" or (change == "repeat" and alert_id == body.get("alert_id")):
                await notify(str(body.get("severity")), {"event": "raised", "alert_id": alert_id, **body})

    @app.timer(interval=_SLA_TICK_S)
    async def escalate_overdue() -> None:
        now_ms = int(time.time() * 1000)
        try:
            due = await rt.desk.due_escalations(now_ms)
        except StoreError as exc:  # Redis unavailable: the next tick looks again
            log.warning("SLA escalations not checked: %s", exc)
            return
        for alert_id in due:
            try:
                doc = await rt.desk.move(alert_id, "escalate", "sla", now_ms, "not acknowledged in time")
            except (AlertMoveError, StoreError):
                continue  # moved meanwhile (another worker, an officer), or Redis failed: next tick
            rt.metrics.desk_moves.labels("escalate", doc["severity"], "sla").inc()
            event = {"event": "escalation", "alert_id": alert_id, "severity": doc["severity"],
                     "customer_id": doc["customer_id"], "at": now_ms}  # fmt: skip
            # Through the spool: a broker outage delays the announcement, does not lose it.
            bulk.publish(s.topic("risk.alerts"), doc["customer_id"].encode(), orjson.dumps(event))
            await notify(doc["severity"], event)
        await export_backlog(rt)

    async def publish_labels(labels: list[dict[str, Any]]) -> None:
        for label in labels:
            bulk.publish(s.topic("feedback"), str(label["customer_id"]).encode(), orjson.dumps(label))

    return AlertApi(rt.desk, rt.service.store, publish_labels, rt.metrics)


def unavailable(exc: StoreError) -> bool:
    """Whether Redis may take the record later: it is gone, slow, out of memory, loading
    or failing over. Anything else it answered (a script error) would fail every time."""
    if exc.kind in ("connection", "timeout"):
        return True
    detail = str(exc).split(" failed: ", 1)[-1]
    return detail.startswith(_TRANSIENT_REPLIES)


async def _raise_until_recorded(rt: Runtime, body: dict[str, Any]) -> tuple[str, str]:
    """Record an alert, waiting for Redis while it is unavailable: raising here would
    crash the agent and with it the worker. The stream waits meanwhile (not acknowledged).
    An error Redis repeats ``_SCRIPT_ATTEMPTS`` times is the record's: EventError, so it
    goes to the dead-letter topic instead of holding back every alert behind it."""
    attempt = 0
    while True:
        try:
            return await rt.desk.raise_alert(body, int(time.time() * 1000))
        except StoreError as exc:
            if not unavailable(exc) and attempt + 1 >= _SCRIPT_ATTEMPTS:
                raise EventError("alert_not_recorded", str(exc)[:300]) from exc
            if attempt == 0:
                extra = {"alert_id": body.get("alert_id"), "customer_id": body.get("customer_id")}
                log.warning("alert %s not recorded (%s); retrying", body.get("alert_id"), exc, extra=extra)
            await asyncio.sleep(min(0.1 * 2**attempt, 2.0))
            attempt += 1


async def export_backlog(rt: Runtime) -> None:
    """The desk's unresolved alerts as gauges (every worker exports the same numbers)."""
    try:
        backlog = await rt.desk.backlog()
    except StoreError:
        return  # counted where the state path meets Redis; the gauges keep their last values
    for (severity, status), count in backlog.items():
        rt.metrics.alerts_open.labels(severity, status).set(count)
