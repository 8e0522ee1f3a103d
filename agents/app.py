"""The Faust app: topics, the interactions agent, the startup task and the web routes."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faust

from agents.bulk import BulkProducer
from agents.desk import register_desk
from agents.kafka_path import KafkaPath
from agents.relay import Relay
from agents.transport import register
from agents.web import register_views
from engine.decide.degraded import ANSWERED_HEADER
from engine.domain.decision import Decision
from engine.errors import StoreError
from engine.http.api import Api
from engine.http.guard import Guard
from engine.ops.kafkaauth import kafka_auth
from engine.service.metrics import Metrics, record_nodes
from engine.service.runtime import Runtime
from engine.settings import Settings

log = logging.getLogger("beacon.app")
_LAG_TICK_S = 5.0


class BeaconApp(faust.App):
    """A Faust app that carries the consumer fetch waits for agents.transport: (busy ms,
    idle ms, the topic whose records keep it busy)."""

    beacon_fetch_wait: tuple[int, int, str] = (5, 0, "")

    def _new_web(self) -> Any:
        """Faust's web server without Faust's own pages. They answer without a credential:
        /router/ and /router/topics/ name the topics and this worker's URL, /table/ serves
        tables, /stats/ and /graph/ internals, and / a status page. Beacon's API
        (agents/web.py) is all the worker serves, every route behind the guard but health."""
        web = super()._new_web()
        # Faust names its built-in blueprints by import path; anything else stays.
        builtin = "faust.web.apps."
        enabled = web.blueprints._enabled
        web.blueprints._enabled = [(p, bp) for p, bp in enabled if not str(bp).startswith(builtin)]
        return web


def broker_credentials(s: Settings) -> faust.SASLCredentials | None:
    """SASL (SCRAM-SHA-512 in compose) for every Kafka client Faust makes; None: PLAINTEXT.
    The other clients take the same from engine.ops.kafkaauth.kafka_auth."""
    if s.kafka_security_protocol == "PLAINTEXT":
        return None
    return faust.SASLCredentials(
        username=s.kafka_sasl_username,
        password=s.kafka_sasl_password,
        mechanism=s.kafka_sasl_mechanism,
        ssl_context=kafka_auth(s).get("ssl_context"),
    )


def create_app(rt: Runtime) -> BeaconApp:
    s = rt.settings
    register()
    app = BeaconApp(
        s.app_id,
        broker=f"beacon://{s.kafka_bootstrap}",
        broker_credentials=broker_credentials(s),
        key_serializer="raw",
        value_serializer="raw",
        web_host=s.http_host,
        web_bind=s.http_host,
        web_port=s.http_port,
        datadir=str(Path(s.data_dir) / f"faust-{s.app_id}"),
        producer_linger=s.producer_linger_ms / 1000.0,
        broker_commit_interval=s.commit_interval_s,
        broker_rebalance_timeout=s.rebalance_timeout_s,
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        consumer_auto_offset_reset="earliest",
        topic_partitions=s.partitions,
        topic_allow_declare=False,
        stream_buffer_maxsize=s.batch_max * 4,
    )
    app.beacon_fetch_wait = (s.fetch_max_wait_ms, s.fetch_idle_wait_ms, s.topic("interactions"))
    interactions = app.topic(s.topic("interactions"), key_type=bytes, value_type=bytes)
    bulk = BulkProducer(s, rt.metrics)
    kafka_path = KafkaPath(app, rt, bulk)
    # Every committed decision's audit record, alerts and label go out through the outbox;
    # one whose HTTP caller already got a degraded answer says so in its audit record.
    relay = Relay(rt.outbox, bulk, s, rt.metrics)
    answered = AnsweredIds()
    rt.service.answered_degraded = answered.take
    api = Api(
        rt.service,
        rt.metrics,
        lambda: dict(rt.readiness),
        on_degraded=_answered_republisher(bulk, rt, answered),
        rules_status=rt.rule_watch.status,
    )
    shadow_topic = s.topic("decisions.shadow")  # what a shadow rules version would do differently
    rt.service.shadow.emit = lambda key, value: bulk.send(shadow_topic, key, value)
    guard = Guard(rt.auth, s.auth_required, s.metrics_token, s.auth_cache_s, s.auth_stale_s)
    register_views(app, api, register_desk(app, rt, bulk), guard, rt.auth)

    @app.agent(interactions, name="decide")
    async def decide(stream: Any) -> None:
        async for event in stream.noack().events():
            await kafka_path.handle(event)

    @app.task
    async def start() -> None:
        await bulk.start()
        rt.readiness["broker"] = True
        while True:
            try:
                await rt.service.store.ping()
                rt.readiness["redis"] = True
                break
            except Exception as exc:  # noqa: BLE001
                log.warning("waiting for Redis: %s", exc)
                await asyncio.sleep(1.0)
        # Decisions start once a rules version runs; until then HTTP answers 503 and
        # Kafka records wait in the batcher's queue.
        await rt.load_rules()
        await rt.load_models()
        rt.service.batcher.start()
        # Start-up objects (modules, Faust's services, compiled rules) live for the whole
        # process: move them out of the collector's reach so full collections stay short.
        gc.collect()
        gc.freeze()
        log.info(
            "beacon ready: http://%s:%s  (metrics at /metrics), rules %s",
            s.http_host,
            s.http_port,
            rt.rule_watch.active,
        )

    @app.task
    async def relay_outbox() -> None:
        await bulk.started()
        await relay.run()

    @app.task
    async def watch_rules() -> None:
        await rt.rule_watch.loaded.wait()
        await rt.rule_watch.watch()

    @app.task
    async def watch_models() -> None:
        await rt.model_watch.loaded.wait()
        await rt.model_watch.watch()

    @app.timer(interval=_LAG_TICK_S)
    async def export_lag() -> None:
        record_lag(app.consumer, rt.metrics)
        with contextlib.suppress(StoreError):  # counted where decisions meet it
            rt.metrics.outbox_backlog.set(await rt.outbox.backlog())
        record_nodes(rt.metrics, await rt.probe_nodes())

    async def flush(sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        # In-flight records finish and are acknowledged; bounded, so a dead Redis cannot
        # hold shutdown (unacknowledged records are redelivered to the next worker).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(kafka_path.drain(), 10.0)
        await bulk.stop()

    app.on_before_shutdown.connect(flush)  # type: ignore[arg-type]  # mode's stub is narrower than its use

    return app


def record_lag(consumer: Any, metrics: Metrics) -> None:
    """Records not yet committed in each partition this worker owns: the high-water mark
    less the committed offset (Faust commits the next offset to read). Partitions that
    moved to another worker lose their series, so a sum over workers counts each once."""
    # Faust's own internal topics (the assignor's, "__" in the name) are not ours to watch.
    owned = {(tp.topic, str(tp.partition)): tp for tp in consumer.assignment() if "__" not in tp.topic}
    for topic, partition in list(metrics.lag_series):
        if (topic, partition) not in owned:
            metrics.consumer_lag.remove(topic, partition)
            metrics.lag_series.discard((topic, partition))
    for (topic, partition), tp in owned.items():
        try:
            highwater = consumer.highwater(tp)
        except Exception:  # noqa: BLE001 - no fetch yet for this partition: nothing to say
            continue
        if highwater is None:
            continue
        committed = consumer._committed_offset.get(tp) or 0
        metrics.consumer_lag.labels(topic, partition).set(max(highwater - committed, 0))
        metrics.lag_series.add((topic, partition))


def _answered_republisher(
    bulk: BulkProducer, rt: Runtime, answered: AnsweredIds | None = None
) -> Callable[[Decision, bytes], None]:
    """A degraded HTTP answer is audited as the channel received it (``degraded: true``),
    and its event goes to ``interactions``, marked as answered, so the Kafka path counts
    it in state once Redis is back (engine/decide/degraded.py). Both through the spool:
    retried while the broker is away, in this order."""
    audit, interactions = rt.settings.topic("decisions.audit"), rt.settings.topic("interactions")

    def republish(decision: Decision, raw: bytes) -> None:
        key = decision.event.customer_id.encode()
        bulk.publish(audit, key, decision.audit_bytes())
        bulk.publish(interactions, key, raw, [(ANSWERED_HEADER, decision.decision_id.encode())])
        if answered is not None:
            answered.add(decision.decision_id)

    return republish


class AnsweredIds:
    """Decision ids this worker answered degraded over HTTP, so that the stateful decision
    of one the batcher decides anyway (an orphan: Redis answered after the budget) is
    committed, and audited through the outbox, as following that answer. The service asks
    just before the commit: an answer given while the commit itself is under way is not
    named (its degraded record, same decision id, is on the audit topic all the same).
    Bounded: the oldest are forgotten first (an answer whose event was still queued never
    comes back as an orphan)."""

    def __init__(self, bound: int = 10_000) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._bound = bound

    def add(self, decision_id: str) -> None:
        self._ids[decision_id] = None
        while len(self._ids) > self._bound:
            self._ids.popitem(last=False)

    def take(self, decision_id: str) -> bool:
        """Whether ``decision_id`` was answered degraded (forgotten once asked: one
        stateful decision follows it)."""
        return self._ids.pop(decision_id, False) is None
