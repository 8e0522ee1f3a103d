"""``beacon replay``: send a bank's own history (JSON Lines or CSV) through Kafka or HTTP.

Over HTTP with authentication on (the default) each event must carry a token allowed to
decide for its channel: ``--token-file`` names a file of ``channel=token`` lines (or one
bare token for every channel), kept out of the command line, where other users of the
machine could read it. ``--retime`` moves the history so its last event is now, keeping
the spacing, so windows and label delays stay what they were; events that then fall
further back than the workers accept (``BEACON_MAX_EVENT_AGE_S``) are counted before
anything is sent. A history older than that goes to a replay deployment whose workers
run with ``BEACON_EVENT_CLOCK=history`` (and a key prefix of its own): they measure the age
from the newest event they accepted, so the file is sent as it is, without ``--retime``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from engine.cli.files import read_events
from engine.errors import BeaconError
from engine.ops.kafkaauth import kafka_auth
from engine.settings import Settings

ANY_CHANNEL = "*"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="events file (.jsonl or .csv)")
    p.add_argument("--rate", type=float, default=100.0, help="events per second (default 100)")
    p.add_argument("--via", choices=("kafka", "http"), default="kafka", help="path to send through")
    p.add_argument("--url", help="worker URL for --via http (default http://HTTP_HOST:HTTP_PORT)")
    p.add_argument(
        "--token-file",
        help="for --via http with auth on: a file of channel=token lines (beacon users token --channel C), "
        "or one token for every channel",
    )
    p.add_argument(
        "--retime", action="store_true", help="shift timestamps so the last event is now, keeping the spacing"
    )
    p.add_argument(
        "--report",
        type=float,
        metavar="SECONDS",
        default=0.0,
        help="then wait up to SECONDS for the trainer to learn the file's labels and print the model report",
    )


def cmd_replay(args: argparse.Namespace) -> int:
    from engine.cli.common import load_settings

    settings = load_settings(args)
    if args.rate <= 0:
        raise BeaconError("--rate must be positive")
    events = list(read_events(args.file))
    if args.retime and events:
        events = retime(events, time.time())
        _say_too_old(events, time.time() - settings.max_event_age_s, settings.max_event_age_s)
    if args.via == "kafka":
        if not settings.kafka_bootstrap:
            raise BeaconError("no broker configured: set BEACON_KAFKA_BOOTSTRAP or pass --kafka")
        outcomes = asyncio.run(_replay_kafka(settings, events, args.rate))
    else:
        url = args.url or f"http://{settings.http_host}:{settings.http_port}"
        tokens = read_tokens(Path(args.token_file)) if args.token_file else {}
        outcomes = asyncio.run(_replay_http(url, events, args.rate, tokens))
    print("replayed", len(events), "events:", ", ".join(f"{k}={v}" for k, v in sorted(outcomes.items())))
    if args.report > 0:
        print(asyncio.run(_settled_report(settings, args.report)))
    return 0 if set(outcomes) <= {"sent", "200"} else 1


def _say_too_old(events: list[dict[str, Any]], oldest: float, max_age_s: float) -> None:
    too_old = sum(1 for e in events if (_ts(e) or oldest) < oldest)
    if too_old:
        print(
            f"note: {too_old} of {len(events)} events are older than the workers accept "
            f"(BEACON_MAX_EVENT_AGE_S = {max_age_s:.0f} s): they will be refused ts_too_old"
        )


def read_tokens(path: Path) -> dict[str, str]:
    """``channel=token`` per line (``#`` comments, blank lines skipped), or one bare token
    that every channel uses."""
    tokens: dict[str, str] = {}
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        channel, sep, token = line.partition("=")
        channel, token = (channel.strip(), token.strip()) if sep else (ANY_CHANNEL, line)
        if not token or not channel:
            raise BeaconError(f"{path}:{n}: expected channel=token")
        tokens[channel] = token
    if not tokens:
        raise BeaconError(f"{path}: no token in it")
    return tokens


def retime(events: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
    """Shift numeric timestamps so the last (the latest) is ``now``, keeping the gaps.

    >>> retime([{"ts": 100.0}, {"ts": 160.0}, {"ts": "x"}], 1000.0)
    [{'ts': 940.0}, {'ts': 1000.0}, {'ts': 'x'}]
    """
    stamps = [t for t in map(_ts, events) if t is not None]
    if not stamps:
        return events
    shifted = now - max(stamps)
    return [{**e, "ts": e["ts"] + shifted} if _ts(e) is not None else e for e in events]


def _ts(event: Mapping[str, Any]) -> float | None:
    ts = event.get("ts")
    return float(ts) if isinstance(ts, int | float) and not isinstance(ts, bool) else None


async def _settled_report(settings: Settings, wait_s: float) -> str:
    """The trainer's report once its label counts stop moving (or after ``wait_s``)."""
    from engine.service.trainreport import quality_report
    from engine.store.redisio import connect

    client = connect(settings)
    try:
        report = await quality_report(settings, client, settle_s=wait_s)
    finally:
        await client.aclose()
    return report or "no model report: is `beacon trainer` running?"


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

    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, **kafka_auth(settings), linger_ms=2
    )
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


async def _replay_http(
    url: str, events: list[dict[str, Any]], rate: float, tokens: Mapping[str, str]
) -> Counter[str]:
    import aiohttp

    outcomes: Counter[str] = Counter()

    async def post(session: aiohttp.ClientSession, event: dict[str, Any]) -> None:
        token = tokens.get(str(event.get("channel")), tokens.get(ANY_CHANNEL))
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            async with session.post(url + "/v1/decisions", data=orjson.dumps(event), headers=headers) as resp:
                await resp.read()
                outcomes[str(resp.status)] += 1
        except aiohttp.ClientError as exc:
            outcomes[type(exc).__name__] += 1

    async with aiohttp.ClientSession(headers={"Content-Type": "application/json"}) as session:
        tasks = [asyncio.create_task(post(session, events[i])) async for i in _paced(len(events), rate)]
        await asyncio.gather(*tasks)
    return outcomes
