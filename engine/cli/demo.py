"""``beacon demo``: everything in one command, for a first look.

Starts the embedded Redis and broker (unless configured), one worker and the trainer,
imports the simulated customers' profiles (20,000 by default) and simulates a day at a
bank (engine/ops/simulation.py): customers at home, at work and travelling, banking at
ATMs, in internet and mobile banking in their own ways, a small planted share of fraud
scenarios, answers to the offers shown and products opened. Most traffic goes through
Kafka; every tenth event of a channel with a token is asked over HTTP as a channel system
would. Live decisions and alerts are printed as they arrive. Ctrl-C stops everything
the demo started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import time
from pathlib import Path
from typing import Any

import orjson

from engine.cli.demosetup import candidate_pack, console_logins, publish_shadow
from engine.cli.demostats import DemoStats
from engine.ops.infra import Embedded, ensure_topics, free_port, start_embedded
from engine.ops.kafkaauth import kafka_auth
from engine.ops.launcher import WorkerProcess, start_trainer, start_worker
from engine.settings import Settings

CHANNELS = ("atm", "internet", "mobile")
_LABELS = frozenset({"offer_response", "conversion"})  # sent by core systems and customers: Kafka
_COLOURS = {"atm": "\033[36m", "internet": "\033[34m", "mobile": "\033[35m", "alert": "\033[1;31m",
            "conversion": "\033[32m", "summary": "\033[1m"}  # fmt: skip
_RESET = "\033[0m"


def cmd_demo(args: argparse.Namespace) -> int:
    from engine.cli.common import load_settings

    settings = load_settings(args)
    if "BEACON_FETCH_MAX_WAIT_MS" not in os.environ:
        # The embedded broker's cost per fetch grows with everything stored (it keeps all of
        # it): at 5 ms per fetch the demo broke down after ~30 minutes, at 20 ms it stayed
        # healthy for the hour measured (BENCHMARKS.md), for ~10 ms more latency.
        settings = settings.replace(fetch_max_wait_ms=max(settings.fetch_max_wait_ms, 20))
    if not _port_free(settings.http_host, settings.http_port):
        settings = settings.replace(http_port=free_port())
    if not settings.trainer_metrics_port:  # model quality is the trainer's to export
        settings = settings.replace(trainer_metrics_port=free_port())
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    logs = Path(settings.data_dir) / "logs"
    emb: Embedded | None = None
    worker: WorkerProcess | None = None
    trainer: WorkerProcess | None = None
    try:
        emb = start_embedded(settings, log_dir=str(logs))
        settings = emb.settings_for(settings)
        if not settings.record_signing_key:  # the production shape: signed records, checked
            settings = settings.replace(record_signing_key=secrets.token_hex(32))
        asyncio.run(ensure_topics(settings))
        print("starting the worker and the trainer ...", flush=True)
        worker = start_worker(settings, logs)
        trainer = start_trainer(settings, logs)
        logins = asyncio.run(console_logins(settings))
        shadow = publish_shadow(
            settings, candidate_pack(settings, Path(settings.data_dir) / "demo-candidate")
        )
        _banner(settings, worker, logs, asyncio.run(_token(settings, "viewer", "demo-viewer")), logins)
        print(shadow + "\n", flush=True)
        asyncio.run(_run(settings, worker.url, args))
    except KeyboardInterrupt:
        pass
    finally:
        print("\nstopping ...", flush=True)
        for proc in (trainer, worker):
            if proc is not None:
                proc.stop()
        if emb is not None:
            emb.stop()
        print("stopped; nothing left running.", flush=True)
    return 0


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((host, port)) != 0


def _banner(
    settings: Settings, worker: WorkerProcess, logs: Path, read_token: str, logins: dict[str, str]
) -> None:
    auth = f'-H "Authorization: Bearer {read_token}"'
    print(
        "\nBeacon demo is running. Every endpoint but health needs a credential:\n"
        f"  alert console  {worker.url}/console            user officer  password {logins['officer']}\n"
        f"  analysts       {worker.url}/console/analyst    user analyst  password {logins['analyst']}\n"
        f"  read token     {read_token}   (viewer: customer views, alerts, reports, metrics)\n"
        f"  offer report   curl {auth} {worker.url}/v1/reports/offers   (the last 30 days)\n"
        f"  rules          curl {auth} {worker.url}/v1/rules   (live and shadow versions)\n"
        f"  customer view  curl {auth} {worker.url}/v1/customers/C000001\n"
        f"  alert inbox    curl {auth} {worker.url}/v1/alerts\n"
        f"  metrics        curl {auth} {worker.url}/metrics   (catalogue: docs/metrics.md)\n"
        f"  model quality  curl http://{settings.http_host}:{settings.trainer_metrics_port}/metrics\n"
        f"  decisions API  POST {worker.url}/v1/decisions  (token: beacon users token --channel atm)\n"
        f"  health         GET  {worker.url}/readyz\n"
        f"  broker         {settings.kafka_bootstrap}   redis {settings.redis_url}\n"
        f"  logs           {logs}/\n"
        "Press Ctrl-C to stop.\n",
        flush=True,
    )


async def _token(settings: Settings, role: str, name: str, channel: str | None = None) -> str:
    from engine.store.redisio import connect
    from engine.store.users import AuthStore

    client = connect(settings)
    try:
        return await AuthStore(client, settings.key_prefix).add_token(role, name, channel)
    finally:
        await client.aclose()


async def _run(settings: Settings, url: str, args: argparse.Namespace) -> None:
    from engine.ops.daylife import Town
    from engine.ops.responses import Responses
    from engine.ops.simulation import SCENARIOS, Simulation

    town = Town(args.customers, seed=int(time.time()) % 1000)
    await _import_profiles(settings, town)
    seed, prefix = int(time.time()), f"demo{int(time.time())}"
    # Products opened within minutes of an offer, so a first look sees the loop close.
    responses = Responses(seed, prefix, delay_s=(20.0, 300.0))
    # It opens with one of each planted fraud scenario, so the first alerts come within minutes.
    gen = Simulation(town, seed=seed, id_prefix=prefix, responses=responses, opening=SCENARIOS)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if args.duration:
        loop.call_later(args.duration, stop.set)
    stats = DemoStats()
    tokens = await _channel_tokens(settings)
    tasks = [
        asyncio.create_task(_simulate(settings, url, gen, args.rate, stop, tokens, stats)),
        asyncio.create_task(_print_live(settings, stop, gen, stats)),
        asyncio.create_task(_print_summaries(stats)),
    ]
    await stop.wait()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _import_profiles(settings: Settings, pop: Any) -> None:
    from engine.store.redisio import connect
    from engine.store.state import StateStore

    client = connect(settings)
    try:
        store = StateStore(client, settings)
        await store.put_profiles([(c.customer_id, c.profile) for c in pop.customers], settings.profile_ttl_s)
    finally:
        await client.aclose()


async def _channel_tokens(settings: Settings) -> dict[str, str]:
    """The simulated channel systems authenticate like real ones: a token per channel."""
    return {ch: await _token(settings, "channel", f"demo-{ch}", ch) for ch in CHANNELS}


async def _print_summaries(stats: DemoStats, every_s: float = 10.0) -> None:
    while True:
        await asyncio.sleep(every_s)
        print(f"{_COLOURS['summary']}== {stats.summary()}{_RESET}", flush=True)


async def _simulate(
    settings: Settings,
    url: str,
    gen: Any,
    rate: float,
    stop: asyncio.Event,
    tokens: dict[str, str],
    stats: DemoStats,
) -> None:
    import aiohttp
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, **kafka_auth(settings), linger_ms=5
    )
    await producer.start()
    topic = settings.topic("interactions")
    pending: set[asyncio.Task[None]] = set()
    try:
        async with aiohttp.ClientSession() as http:
            start, i = time.perf_counter(), 0
            while not stop.is_set():
                event = gen.next_event(time.time())
                if event["type"] == "conversion":
                    _print_conversion(event)
                if i % 10 == 9 and event["channel"] in tokens and event["type"] not in _LABELS:
                    token = tokens[event["channel"]]
                    task = asyncio.create_task(_ask_http(http, url, event, token, stats))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                else:
                    stats.sent(event["event_id"])
                    await producer.send(topic, orjson.dumps(event), key=event["customer_id"].encode())
                i += 1
                await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
    finally:
        await producer.stop()


async def _ask_http(http: Any, url: str, event: dict[str, Any], token: str, stats: DemoStats) -> None:
    with contextlib.suppress(Exception):
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        started = time.perf_counter()
        async with http.post(url + "/v1/decisions", data=orjson.dumps(event), headers=headers) as resp:
            body = orjson.loads(await resp.read())
        ms = (time.perf_counter() - started) * 1000.0  # as the channel saw it: the whole round trip
        stats.decided("http", ms)
        _print_decision("http", body, ms)


async def _print_live(settings: Settings, stop: asyncio.Event, gen: Any, stats: DemoStats) -> None:
    """Print what the channels receive. The simulated customers answer what they are shown
    (from ``decisions.audit``, see ``_feed_back``; from these answers when that is not
    readable, without the control group's held-back offers)."""
    from aiokafka import AIOKafkaConsumer

    topics = [settings.topic(f"decisions.{c}") for c in CHANNELS] + [settings.topic("risk.alerts")]
    # A channel waiting for its answers fetches with a short wait (aiokafka's default, 500 ms,
    # is held whole by the embedded broker and would be most of the latency printed).
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=settings.kafka_bootstrap,
        **kafka_auth(settings),
        auto_offset_reset="latest",
        fetch_max_wait_ms=5,
    )
    await consumer.start()
    feed = asyncio.create_task(_feed_back(settings, gen))
    models = ""
    try:
        async for record in consumer:
            body = orjson.loads(record.value)
            if record.topic.endswith("risk.alerts"):
                stats.alerted()
                _print_alert(body)
                continue
            ms = stats.answered(str(body.get("event_id")))  # sent to the broker -> decision read back
            if ms is not None:
                stats.decided("kafka", ms)
            _print_decision("kafka", body, ms)
            if feed.done():  # no audit records to read: answer what the channel was told
                gen.observe(body, time.time())
            now = ", ".join(f"{v}" for v in (body.get("versions") or {}).get("models", {}).values())
            if now and now != models:
                models = stats.models = now
                print(f"   models: {models}", flush=True)
    finally:
        feed.cancel()
        await asyncio.gather(feed, return_exceptions=True)
        await consumer.stop()


async def _feed_back(settings: Settings, gen: Any) -> None:
    """Every decision's audit record to the simulated customers, who answer offers (with a
    taste per segment the offer model should pick up) and open products (a planted uplift
    for one offer against the control group: engine/ops/responses.py)."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.errors import KafkaError

    consumer = AIOKafkaConsumer(
        settings.topic("decisions.audit"),
        bootstrap_servers=settings.kafka_bootstrap,
        **kafka_auth(settings),
        auto_offset_reset="latest",
    )
    try:
        await consumer.start()
        try:
            async for record in consumer:
                gen.observe(orjson.loads(record.value), time.time())
        finally:
            await consumer.stop()
    except KafkaError as e:  # e.g. a principal without read access to decisions.audit
        note = f"{type(e).__name__} on decisions.audit"
        print(f"   customers answer from the channels' decisions ({note})", flush=True)


def _print_decision(path: str, d: dict[str, Any], ms: float | None) -> None:
    if "actions" not in d:
        print(f"  [{path}] rejected: {d.get('error')}", flush=True)
        return
    ch = d["channel"]
    top = d["actions"][0]
    risk = d["risk"]
    line = (
        f"{_COLOURS.get(ch, '')}{ch:>8}{_RESET} {path:>5} {_ms(ms)}  {d['customer_id']}  "
        f"-> {top['kind']}:{top['id']}  risk {risk['verdict']} {risk['score']:.2f}"
    )
    if d.get("alerts"):
        line += f"  alerts: {', '.join(a['rule_id'] for a in d['alerts'])}"
    print(line, flush=True)


def _ms(ms: float | None) -> str:
    """The latency column: the channel's wait for this decision (a label event's answer,
    sent by the demo's customers, has none)."""
    return f"{ms:6.1f} ms" if ms is not None else "       -  "


def _print_conversion(ev: dict[str, Any]) -> None:
    """A product opened (the core systems' event): the offers report matches it to offers."""
    print(
        f"{_COLOURS['conversion']}  CONVERTED{_RESET} {ev['customer_id']}  {ev['attributes']['product']}  "
        f"{ev['amount']:.2f} {ev['currency']}",
        flush=True,
    )


def _print_alert(a: dict[str, Any]) -> None:
    print(
        f"{_COLOURS['alert']}   ALERT{_RESET} {a['severity']:>8}  {a['customer_id']}  "
        f"{a['rule_id']}: {a['reason']}  (recommend {a['action']})",
        flush=True,
    )
