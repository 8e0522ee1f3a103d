"""``beacon webhooks dead`` and ``beacon webhooks redeliver``: what an operator does with
alert deliveries a receiver never took (engine/store/hookbox.py keeps them on a dead list)."""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import orjson

from engine.cli.common import load_settings, with_redis
from engine.errors import BeaconError
from engine.settings import Settings


def add_arguments(add: Any) -> None:
    p: argparse.ArgumentParser = add("webhooks", "alert webhook deliveries: the dead list, redelivery",
                                     lambda a: _help(p))  # fmt: skip
    sub = p.add_subparsers(dest="webhooks_command")
    what = "list deliveries given up on, newest first, with the queue's length"
    dead = sub.add_parser("dead", help=what, description=what)
    dead.add_argument("--limit", type=int, default=50)
    dead.add_argument("--json", action="store_true", help="one JSON object a line, bodies included")
    dead.set_defaults(func=cmd_dead)
    what = "queue dead deliveries again, due now with a fresh retry horizon"
    again = sub.add_parser("redeliver", help=what, description=what)
    again.add_argument("ids", nargs="*", metavar="DELIVERY_ID")
    again.add_argument("--all", action="store_true", help="every delivery on the dead list")
    again.set_defaults(func=cmd_redeliver)
    for parser in (dead, again):
        parser.add_argument("--config")
        parser.add_argument("--redis-url", dest="redis_url")


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(args)
    if not settings.redis_url:
        raise BeaconError("no Redis configured: set BEACON_REDIS_URL or pass --redis-url")
    return settings


def cmd_dead(args: argparse.Namespace) -> int:
    settings = _settings(args)
    from engine.store.hookbox import HookBox

    async def read(client: Any) -> tuple[int, list[dict[str, Any]]]:
        box = HookBox(client, settings.key_prefix)
        return await box.pending(), await box.dead(args.limit)

    pending, dead = asyncio.run(with_redis(settings, read))
    if args.json:
        for entry in dead:
            print(orjson.dumps(entry).decode())
        return 0
    print(f"queued: {pending}; dead, newest first (at most {args.limit}):")
    for line in dead_lines(dead):
        print(line)
    return 0


def dead_lines(dead: list[dict[str, Any]]) -> list[str]:
    """The dead list as an operator reads it: when, which delivery, to whom, why.

    >>> dead_lines([{"id": "d1", "receiver": "pager", "attempts": 14, "first_ms": 0,
    ...     "dead_ms": 86_400_000, "reason": "http_503", "body": {"alert_id": "A1", "severity": "high"}}])
    ['1970-01-02T00:00:00Z  d1  pager  14 attempts over 24.0 h  http_503  alert A1 (high)']
    """
    out = []
    for e in dead:
        when = datetime.fromtimestamp(e["dead_ms"] / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        hours = (e["dead_ms"] - e["first_ms"]) / 3_600_000
        body = e.get("body") or {}
        alert = f"alert {body.get('alert_id', '?')} ({body.get('severity', '?')})"
        out.append(f"{when}  {e['id']}  {e['receiver']}  {e['attempts']} attempts over {hours:.1f} h  "
                   f"{e['reason']}  {alert}")  # fmt: skip
    return out


def cmd_redeliver(args: argparse.Namespace) -> int:
    if bool(args.ids) == args.all:
        raise BeaconError("name the delivery ids to redeliver, or --all (not both)")
    settings = _settings(args)
    from engine.store.hookbox import HookBox

    wanted = None if args.all else set(args.ids)
    now_ms = int(time.time() * 1000)
    queued = asyncio.run(
        with_redis(settings, lambda c: HookBox(c, settings.key_prefix).redeliver(wanted, now_ms))
    )
    print(f"queued again: {len(queued)}")
    missing = sorted((wanted or set()) - set(queued))
    for delivery in missing:
        print(f"not on the dead list: {delivery}")
    return 1 if missing else 0
