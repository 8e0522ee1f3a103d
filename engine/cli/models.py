"""``beacon trainer`` (the one process that learns) and ``beacon models report``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import logging.config
import signal
from typing import Any

from engine.cli.common import with_redis
from engine.errors import BeaconError
from engine.service.logs import logging_config
from engine.settings import Settings
from engine.store.redisio import connect

log = logging.getLogger("beacon.trainer")


def add_commands(sub: Any, add: Any) -> None:
    add("trainer", "run the trainer: learn from labels, publish signed model snapshots", cmd_trainer)
    what = (
        "model quality: ROC AUC and PR AUC of the scores the channels received (windows of positives), "
        "the trainer's current model (progressive), calibration, label delay, the trainer's lag"
    )
    p = sub.add_parser("models", help=what, description=what)
    p.set_defaults(func=lambda a: (p.print_help(), 0)[1])
    msub = p.add_subparsers(dest="models_command", metavar="{report,rollback}")
    r = msub.add_parser("report", help="print the trainer's quality report", description=what)
    r.add_argument("--config", help="TOML settings file (else BEACON_CONFIG, env vars, defaults)")
    r.add_argument("--redis-url", dest="redis_url", help="Redis URL (else BEACON_REDIS_URL)")
    r.set_defaults(func=cmd_report)
    why = (
        "republish an old snapshot's payload as a new, higher version whose signed manifest says "
        "rollback_of (workers refuse to go back otherwise); needs BEACON_SIGNING_KEY_FILE"
    )
    b = msub.add_parser("rollback", help=why, description=why)
    b.add_argument("name", help="the model, e.g. fraud")
    b.add_argument("version", help="the stored version to go back to, e.g. fraud-v12-0123456789ab")
    b.add_argument("--config", help="TOML settings file (else BEACON_CONFIG, env vars, defaults)")
    b.add_argument("--redis-url", dest="redis_url", help="Redis URL (else BEACON_REDIS_URL)")
    b.set_defaults(func=cmd_rollback)


def _settings(args: argparse.Namespace) -> Settings:
    from engine.cli.common import load_settings

    settings = load_settings(args)
    if not settings.redis_url:
        raise BeaconError("needs BEACON_REDIS_URL (the trainer and workers share one Redis)")
    return settings


def cmd_report(args: argparse.Namespace) -> int:
    from engine.service.trainreport import quality_report

    settings = _settings(args)

    async def read() -> str | None:
        client = connect(settings)
        try:
            return await quality_report(settings, client)
        finally:
            await client.aclose()

    report = asyncio.run(read())
    if report is None:
        print("no quality report yet: is `beacon trainer` running, and have labels arrived?")
        return 1
    print(report)
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from engine.store.snapshots import SnapshotStore

    settings = _settings(args)

    async def rollback(client: Any) -> str:
        return await SnapshotStore(client, settings).rollback(args.name, args.version)

    published = asyncio.run(with_redis(settings, rollback))
    print(f"{args.name}: {published} (rollback_of {args.version}) published")
    return 0


def cmd_trainer(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if not settings.kafka_bootstrap:
        raise BeaconError("the trainer needs BEACON_KAFKA_BOOTSTRAP")
    logging.config.dictConfig(logging_config(settings.log_level, settings.log_format))
    asyncio.run(run_trainer(settings))
    return 0


async def run_trainer(settings: Settings) -> None:
    from agents.trainer import consume
    from engine.service.trainer import build_trainer
    from models.registry import REGISTRY

    client = connect(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    trainer = await build_trainer(settings, client)
    if settings.trainer_metrics_port:
        from prometheus_client import start_http_server

        from models.trainer_metrics import TrainerMetrics

        trainer.metrics = TrainerMetrics()
        start_http_server(
            settings.trainer_metrics_port, addr=settings.http_host, registry=trainer.metrics.registry
        )
        log.info("trainer metrics at http://%s:%s/metrics", settings.http_host, settings.trainer_metrics_port)
    log.info("trainer ready: learning %s", ", ".join(REGISTRY))
    try:
        await consume(trainer, settings, stop)
    finally:
        await client.aclose()
