"""What every ``beacon`` command shares: the server options and building the settings."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from engine.settings import Settings

T = TypeVar("T")


async def with_redis(settings: Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``work(client)`` on a Redis client made for it, closed afterwards (one command's use)."""
    from engine.store.redisio import connect

    client = connect(settings)
    try:
        return await work(client)
    finally:
        await client.aclose()


def load_settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    for name in ("redis_url", "kafka_bootstrap", "http_port", "topic_prefix", "key_prefix", "app_id"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return Settings.build(config_file=getattr(args, "config", None), **overrides)


def add_common_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML settings file (else BEACON_CONFIG, env vars, defaults)")
    p.add_argument("--redis-url", dest="redis_url", help="Redis URL; default: start an embedded one")
    p.add_argument("--kafka", dest="kafka_bootstrap", help="broker host:port; default: start an embedded one")
    p.add_argument("--http-port", dest="http_port", type=int, help="HTTP API port")
