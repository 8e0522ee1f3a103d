"""``beacon backtest``: what a rule or model change would have done on the logged stream."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

HELP = (
    "decide every event of decisions.audit (or a file of its records) again with candidate rules "
    "and/or model snapshots, and report what changes: verdicts by channel, alerts, each rule's "
    "precision and recall against the fraud labels known so far, offers shown, contacts per day"
)


def add_commands(sub: Any) -> None:
    p = sub.add_parser("backtest", help=HELP, description=HELP)
    p.set_defaults(func=cmd_backtest)
    p.add_argument("--config", help="TOML settings file (else BEACON_CONFIG, env vars, defaults)")
    p.add_argument("--redis-url", dest="redis_url", help="Redis URL, for --models (else BEACON_REDIS_URL)")
    p.add_argument("--kafka", dest="kafka_bootstrap", help="broker host:port (else BEACON_KAFKA_BOOTSTRAP)")
    p.add_argument("--rules", required=True, type=Path, metavar="DIR", help="candidate rule packs (*.yaml)")
    p.add_argument(
        "--models",
        action="append",
        default=[],
        metavar="VERSION",
        help="a model snapshot version to score with (e.g. fraud-v12-0123456789ab); repeat or "
        "comma-separate; other models keep the scores recorded",
    )
    p.add_argument("--since", required=True, help="start: 2026-11-01, an ISO 8601 time, or epoch seconds")
    p.add_argument("--until", help="end (exclusive), as --since; default: everything recorded")
    p.add_argument("--channel", action="append", default=[], help="only this channel's events (repeat)")
    p.add_argument("--file", type=Path, metavar="AUDIT.jsonl", help="audit records from this file, not Kafka")
    p.add_argument("--out", type=Path, metavar="DIR", help="write backtest.json, .md and .png here")
    p.add_argument("--format", choices=("md", "json"), default="md", help="what to print (default md)")


def cmd_backtest(args: argparse.Namespace) -> int:
    from engine.cli.common import load_settings
    from engine.domain.periods import parse_time
    from engine.service.backtest import Request, report_bytes, run, write

    settings = load_settings(args)
    models = tuple(v.strip() for arg in args.models for v in arg.split(",") if v.strip())
    request = Request(
        rules_dir=args.rules,
        since=parse_time(args.since, "--since"),
        until=parse_time(args.until, "--until") if args.until else None,
        models=models,
        file=args.file,
        channels=tuple(sorted(set(args.channel))),
    )
    report = asyncio.run(run(settings, request))
    if args.out is not None:
        for line in write(report, args.out):
            print(line, file=sys.stderr)
    sys.stdout.buffer.write(report_bytes(report, args.format))
    return 0
