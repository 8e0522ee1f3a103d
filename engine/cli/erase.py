"""``beacon customers erase ID`` and ``beacon customers erasures``: a customer's right to
erasure (engine/store/erasure.py has what goes, what is made anonymous, what cannot be)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
from typing import Any

import orjson

from engine.cli.common import load_settings, with_redis
from engine.errors import BeaconError


def add_arguments(csub: Any) -> None:
    what = "erase a customer: state, profile and history, device links; alerts made anonymous"
    p = csub.add_parser("erase", help=what, description=what)
    p.add_argument("customer_id")
    p.add_argument("--dry-run", action="store_true", help="print what would go, change nothing")
    p.add_argument("--by", default="", help="who asked for it, for the erasure log (default: your login)")
    p.add_argument("--config")
    p.add_argument("--redis-url", dest="redis_url")
    p.set_defaults(func=cmd_erase)
    what = "list the erasure log, newest first"
    p = csub.add_parser("erasures", help=what, description=what)
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--config")
    p.add_argument("--redis-url", dest="redis_url")
    p.set_defaults(func=cmd_erasures)


def cmd_erase(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    if not settings.redis_url:
        raise BeaconError("no Redis configured: set BEACON_REDIS_URL or pass --redis-url")
    by = args.by or getpass.getuser()
    plan = asyncio.run(_erase(settings, args.customer_id, by, args.dry_run))
    verb = "would erase" if args.dry_run else "erased"
    print(f"{verb} {args.customer_id} as {plan['customer']}: {plan['keys']} keys, "
          f"{plan['devices']} device links, {plan['alerts']} alerts made anonymous, "
          f"{plan['webhooks']} webhook deliveries made anonymous")  # fmt: skip
    if args.dry_run:
        for key in plan["key_names"]:
            print(f"  {key}")
    return 0


def cmd_erasures(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    if not settings.redis_url:
        raise BeaconError("no Redis configured: set BEACON_REDIS_URL or pass --redis-url")
    for entry in asyncio.run(_log(settings, args.limit)):
        print(orjson.dumps(entry).decode())
    return 0


async def _erase(settings: Any, customer_id: str, by: str, dry_run: bool) -> dict[str, Any]:
    from engine.store.erasure import Eraser

    async def work(client: Any) -> dict[str, Any]:
        eraser = Eraser(client, settings)
        plan = await (eraser.plan(customer_id) if dry_run else eraser.erase(customer_id, by))
        return {**plan.summary(), "key_names": plan.keys}

    return await with_redis(settings, work)


async def _log(settings: Any, limit: int) -> list[dict[str, Any]]:
    from engine.store.erasure import Eraser

    return await with_redis(settings, lambda client: Eraser(client, settings).log(limit))
