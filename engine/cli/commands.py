"""CLI commands beyond running a worker: customers import, replay, doctor, demo."""

from __future__ import annotations

import argparse
import asyncio
import csv
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from engine.cli.files import profile_from_row, read_events
from engine.errors import BeaconError, EventError
from engine.http.api import validate_profile
from engine.settings import Settings

Add = Callable[[str, str, Callable[[argparse.Namespace], int]], argparse.ArgumentParser]


def add_commands(sub: Any, add: Add) -> None:
    from engine.cli import demo, doctor

    p = add("demo", "start everything, simulate channel traffic, print live decisions", demo.cmd_demo)
    p.add_argument("--rate", type=float, default=8.0, help="simulated events per second (default 8)")
    p.add_argument("--duration", type=float, default=0.0, help="seconds to run; 0 = until Ctrl-C")
    p.add_argument("--customers", type=int, default=300, help="simulated customers (default 300)")

    p = add("replay", "send events from a JSON Lines or CSV file at a fixed rate", cmd_replay)
    p.add_argument("file", help="events file (.jsonl or .csv)")
    p.add_argument("--rate", type=float, default=100.0, help="events per second (default 100)")
    p.add_argument("--via", choices=("kafka", "http"), default="kafka", help="path to send through")
    p.add_argument("--url", help="worker URL for --via http (default http://HTTP_HOST:HTTP_PORT)")
    p.add_argument("--retime", action="store_true", help="shift timestamps so the first event is now")
    p.add_argument(
        "--report",
        type=float,
        metavar="SECONDS",
        default=0.0,
        help="then wait up to SECONDS for the trainer to learn the file's labels and print the model report",
    )

    p = add("customers", "manage customer profiles", lambda a: _customers_help(p))
    csub = p.add_subparsers(dest="customers_command")
    imp = csub.add_parser("import", help="import profiles from CSV", description="import profiles from CSV")
    imp.add_argument("file", help="CSV with customer_id,segment,age_band,income_band,kyc_risk,products,...")
    imp.add_argument("--config")
    imp.add_argument("--redis-url", dest="redis_url")
    imp.set_defaults(func=cmd_customers_import)

    p = add("doctor", "check configuration, binaries, Redis, broker and versions", doctor.cmd_doctor)
    p.add_argument("--url", help="also check a running worker's /readyz")


def _customers_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _settings(args: argparse.Namespace) -> Settings:
    from engine.cli.common import load_settings

    return load_settings(args)


# -- customers import ---------------------------------------------------------------


def cmd_customers_import(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if not settings.redis_url:
        raise BeaconError("no Redis configured: set BEACON_REDIS_URL or pass --redis-url")
    good, bad = load_profiles(Path(args.file))
    for line, message in bad:
        print(f"{args.file}:{line}: {message}")
    asyncio.run(_import(settings, good))
    print(f"imported {len(good)} profiles; rejected {len(bad)}")
    return 1 if bad else 0


def load_profiles(path: Path) -> tuple[list[tuple[str, dict[str, Any]]], list[tuple[int, str]]]:
    good: list[tuple[str, dict[str, Any]]] = []
    bad: list[tuple[int, str]] = []
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or "customer_id" not in reader.fieldnames:
                raise BeaconError(f"{path}: the header must include customer_id")
            for line, row in enumerate(reader, 2):
                try:
                    cid, profile = profile_from_row(row)
                    good.append((cid, validate_profile(profile)))
                except EventError as err:
                    bad.append((line, f"{err.field or ''}: {err.message}"))
    except OSError as exc:
        raise BeaconError(f"cannot read {path}: {exc}") from exc
    return good, bad


async def _import(settings: Settings, profiles: list[tuple[str, dict[str, Any]]]) -> None:
    from engine.store.redisio import connect
    from engine.store.state import StateStore

    client = connect(settings)
    store = StateStore(client, settings)
    try:
        for i in range(0, len(profiles), 500):
            await store.put_profiles(profiles[i : i + 500], settings.profile_ttl_s)
    finally:
        await client.aclose()


# -- replay ---------------------------------------------------------------------------


def cmd_replay(args: argparse.Namespace) -> int:
    settings = _settings(args)
    events = list(read_events(args.file))
    if args.retime and events:
        events = retime(events, time.time())
    if args.rate <= 0:
        raise BeaconError("--rate must be positive")
    if args.via == "kafka":
        if not settings.kafka_bootstrap:
            raise BeaconError("no broker configured: set BEACON_KAFKA_BOOTSTRAP or pass --kafka")
        outcomes = asyncio.run(_replay_kafka(settings, events, args.rate))
    else:
        url = args.url or f"http://{settings.http_host}:{settings.http_port}"
        outcomes = asyncio.run(_replay_http(url, events, args.rate))
    print("replayed", len(events), "events:", ", ".join(f"{k}={v}" for k, v in sorted(outcomes.items())))
    if args.report > 0:
        print(asyncio.run(_settled_report(settings, args.report)))
    return 0 if set(outcomes) <= {"sent", "200"} else 1


async def _settled_report(settings: Settings, wait_s: float) -> str:
    """The trainer's report once its label counts stop moving (or after ``wait_s``)."""
    from engine.service.trainer import quality_report
    from engine.store.redisio import connect

    client = connect(settings)
    try:
        report = await quality_report(settings, client, settle_s=wait_s)
    finally:
        await client.aclose()
    return report or "no model report: is `beacon trainer` running?"


def retime(events: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
    """Shift numeric timestamps so the first is ``now``, keeping the gaps.

    >>> retime([{"ts": 100.0}, {"ts": 160.0}], 1000.0)
    [{'ts': 1000.0}, {'ts': 1060.0}]
    """
    first = next((e["ts"] for e in events if isinstance(e.get("ts"), int | float)), None)
    if first is None:
        return events
    shifted = now - first
    return [{**e, "ts": e["ts"] + shifted} if isinstance(e.get("ts"), int | float) else e for e in events]


async def _paced(n: int, rate: float) -> Any:
    """Yield indexes on a fixed schedule (open loop: late sends do not shift later ones)."""
    start = time.perf_counter()
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        yield i


async def _replay_kafka(settings: Settings, events: list[dict[str, Any]], rate: float) -> Counter[str]:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=2)
    await producer.start()
    outcomes: Counter[str] = Counter()
    try:
        topic = settings.topic("interactions")
        futures = []
        async for i in _paced(len(events), rate):
            event = events[i]
            key = str(event.get("customer_id", "")).encode()
            futures.append(await producer.send(topic, orjson.dumps(event), key=key))
        for fut in futures:
            await fut
            outcomes["sent"] += 1
    finally:
        await producer.stop()
    return outcomes


async def _replay_http(url: str, events: list[dict[str, Any]], rate: float) -> Counter[str]:
    import aiohttp

    outcomes: Counter[str] = Counter()

    async def post(session: aiohttp.ClientSession, event: dict[str, Any]) -> None:
        try:
            async with session.post(url + "/v1/decisions", data=orjson.dumps(event)) as resp:
                await resp.read()
                outcomes[str(resp.status)] += 1
        except aiohttp.ClientError as exc:
            outcomes[type(exc).__name__] += 1

    async with aiohttp.ClientSession(headers={"Content-Type": "application/json"}) as session:
        tasks = [asyncio.create_task(post(session, events[i])) async for i in _paced(len(events), rate)]
        await asyncio.gather(*tasks)
    return outcomes
