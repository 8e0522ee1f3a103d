"""CLI commands beyond running a worker: customers import (and erase), replay, doctor, demo."""

from __future__ import annotations

import argparse
import asyncio
import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.cli.files import profile_from_row
from engine.domain.profile import validated as validate_profile
from engine.errors import BeaconError, EventError
from engine.settings import Settings

Add = Callable[[str, str, Callable[[argparse.Namespace], int]], argparse.ArgumentParser]


def add_commands(sub: Any, add: Add) -> None:
    from engine.cli import demo, doctor, erase, replay, webhooks

    p = add("demo", "start everything, simulate channel traffic, print live decisions", demo.cmd_demo)
    p.add_argument("--rate", type=float, default=8.0, help="simulated events per second (default 8)")
    p.add_argument("--duration", type=float, default=0.0, help="seconds to run; 0 = until Ctrl-C")
    p.add_argument("--customers", type=int, default=300, help="simulated customers (default 300)")

    what = "send events from a JSON Lines or CSV file at a fixed rate"
    replay.add_arguments(add("replay", what, replay.cmd_replay))

    p = add("customers", "manage customer profiles", lambda a: _customers_help(p))
    csub = p.add_subparsers(dest="customers_command")
    imp = csub.add_parser("import", help="import profiles from CSV", description="import profiles from CSV")
    imp.add_argument("file", help="CSV with customer_id,segment,age_band,income_band,kyc_risk,products,...")
    imp.add_argument("--config")
    imp.add_argument("--redis-url", dest="redis_url")
    imp.set_defaults(func=cmd_customers_import)
    erase.add_arguments(csub)

    webhooks.add_arguments(add)

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
