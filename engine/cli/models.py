"""``beacon trainer`` (the one process that learns) and ``beacon models report``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import logging.config
import signal
from typing import Any

from engine.errors import BeaconError
from engine.service.logs import logging_config
from engine.settings import Settings
from engine.store.redisio import connect

log = logging.getLogger("beacon.trainer")


def add_commands(sub: Any, add: Any) -> None:
    add("trainer", "run the trainer: learn from labels, publish signed model snapshots", cmd_trainer)
    what = "model quality: progressive ROC AUC, PR AUC, calibration, label delay"
    p = sub.add_parser("models", help=what, description=what)
    p.set_defaults(func=lambda a: (p.print_help(), 0)[1])
    msub = p.add_subparsers(dest="models_command", metavar="{report}")
    r = msub.add_parser("report", help="print the trainer's quality report", description=what)
    r.add_argument("--config", help="TOML settings file (else BEACON_CONFIG, env vars, defaults)")
    r.add_argument("--redis-url", dest="redis_url", help="Redis URL (else BEACON_REDIS_URL)")
    r.set_defaults(func=cmd_report)


def _settings(args: argparse.Namespace) -> Settings:
    from engine.cli.common import load_settings

    settings = load_settings(args)
    if not settings.redis_url:
        raise BeaconError("needs BEACON_REDIS_URL (the trainer and workers share one Redis)")
    return settings


def cmd_report(args: argparse.Namespace) -> int:
    from engine.store.feedback import FeedbackStore
    from models.quality import render_report

    settings = _settings(args)

    async def read() -> dict[str, Any]:
        client = connect(settings)
        try:
            return await FeedbackStore(client, settings.key_prefix, settings.feedback_ttl_s).load_quality()
        finally:
            await client.aclose()

    summaries = asyncio.run(read())
    if not summaries:
        print("no quality report yet: is `beacon trainer` running, and have labels arrived?")
        return 1
    print(render_report(summaries))
    return 0


def cmd_trainer(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if not settings.kafka_bootstrap:
        raise BeaconError("the trainer needs BEACON_KAFKA_BOOTSTRAP")
    logging.config.dictConfig(logging_config(settings.log_level, settings.log_format))
    asyncio.run(run_trainer(settings))
    return 0


async def run_trainer(settings: Settings) -> None:
    from engine.service.trainer import Trainer, consume
    from engine.store.feedback import FeedbackStore
    from engine.store.snapshots import SnapshotStore
    from models.learner import Learner
    from models.registry import REGISTRY, build, spec_for

    client = connect(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    snapshots = SnapshotStore(client, settings)
    attrs = (settings.model_attributes_numeric, settings.model_attributes_categorical)
    models = {name: build(name, *attrs) for name in REGISTRY}
    versions: dict[str, str] = {}
    for name in REGISTRY:  # warm start: carry on from the latest published snapshot
        latest = await snapshots.latest(name)
        if latest is not None:
            versions[name], models[name], _ = latest
            log.info("warm start from %s", versions[name])
    learner = Learner(models, {name: spec_for(name, *attrs) for name in REGISTRY})
    trainer = Trainer(
        settings, learner, FeedbackStore(client, settings.key_prefix, settings.feedback_ttl_s), snapshots
    )
    trainer.versions.update(versions)
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
