"""What every ``beacon`` command shares: the server options and building the settings."""

from __future__ import annotations

import argparse
from typing import Any

from engine.settings import Settings


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
