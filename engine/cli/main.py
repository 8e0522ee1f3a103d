"""``beacon``: one entry point for operators, developers and CI. ``--help`` on each command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from engine.cli.common import add_common_options, load_settings
from engine.errors import BeaconError
from engine.service.logs import logging_config
from engine.settings import Settings

log = logging.getLogger("beacon")


def run_worker(settings: Settings) -> int:
    """Run one Faust worker (agents + HTTP API) in this process until stopped.

    Refuses to start with ``signing_key_file`` set: a worker faces the internet, and the
    private key that signs model snapshots must not be on it (issue 17, finding 6)."""
    if settings.signing_key_file:
        raise BeaconError(
            "a worker refuses to start with BEACON_SIGNING_KEY_FILE set: the private key that signs "
            "model snapshots belongs to the trainer and the admin CLI only; give workers "
            "BEACON_SIGNING_PUBLIC_KEYS"
        )
    import faust
    import uvloop

    from agents.app import create_app
    from engine.ops.infra import ensure_topics
    from engine.service.runtime import Runtime

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    loop.run_until_complete(ensure_topics(settings))
    app = create_app(Runtime.build(settings))
    worker = faust.Worker(
        app,
        loop=loop,
        loglevel=settings.log_level,
        logging_config=logging_config(settings.log_level, settings.log_format),
        redirect_stdouts=False,
        quiet=settings.log_format == "json",  # the banner is for people, not log shippers
    )
    worker.execute_from_commandline()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    if not settings.redis_url or not settings.kafka_bootstrap:
        raise BeaconError("worker needs BEACON_REDIS_URL and BEACON_KAFKA_BOOTSTRAP (or use `beacon up`)")
    return run_worker(settings)


def cmd_up(args: argparse.Namespace) -> int:
    from engine.ops.infra import start_embedded

    settings = load_settings(args)
    emb = start_embedded(settings, log_dir=os.path.join(settings.data_dir, "logs"))
    trainer = None
    try:
        settings = emb.settings_for(settings)
        print(f"redis:  {_mask(settings.redis_url)}\nbroker: {settings.kafka_bootstrap}", flush=True)
        from engine.ops.launcher import start_trainer

        trainer = start_trainer(settings, Path(settings.data_dir) / "logs")  # learns; the worker only scores
        return run_worker(settings.replace(signing_key_file=""))  # the trainer alone signs
    finally:
        if trainer is not None:
            trainer.stop()
        emb.stop()


def _mask(url: str) -> str:
    # redis://user:secret@host -> redis://user:***@host
    if "@" in url and ":" in url.split("@", 1)[0].split("//", 1)[-1]:
        head, tail = url.split("@", 1)
        return head.rsplit(":", 1)[0] + ":***@" + tail
    return url


def build_parser() -> argparse.ArgumentParser:
    from engine.cli import backtest, commands, keys, models, report, rules, users

    parser = argparse.ArgumentParser(prog="beacon", description="Beacon real-time decision engine")
    sub = parser.add_subparsers(dest="command", required=True)
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {}

    def add(name: str, help_: str, fn: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        add_common_options(p)
        p.set_defaults(func=fn)
        handlers[name] = fn
        return p

    add("up", "start embedded Redis and broker (unless configured) and one worker", cmd_up)
    add("worker", "run one worker against configured Redis and broker", cmd_worker)
    commands.add_commands(sub, add)
    rules.add_commands(sub)
    models.add_commands(sub, add)
    backtest.add_commands(sub)
    users.add_commands(sub)
    keys.add_commands(sub)
    report.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        result: int = args.func(args)
        return result
    except BeaconError as exc:
        print(f"beacon: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
