"""Shared helpers for integration tests: a real worker process and Kafka I/O."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

from engine.ops.launcher import WorkerProcess, isolated, running_worker, start_worker
from models.ed25519 import generate_keypair

__all__ = [
    "WorkerProcess",
    "consume_until",
    "isolated",
    "paced",
    "running_worker",
    "same_origin",
    "start_worker",
]


Record = tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]


async def consume_until(
    bootstrap: str,
    topics: list[str],
    want: int,
    timeout: float,
    done: Callable[[list[Record]], bool] | None = None,
) -> list[Record]:
    """Read (topic, key, value, headers) from the start of topics until ``want`` records
    (or until ``done(records)`` is true, when given) or the timeout."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
    )
    await consumer.start()
    out: list[Record] = []
    deadline = time.monotonic() + timeout
    finished = done or (lambda records: len(records) >= want)
    try:
        while not finished(out) and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                out.extend((r.topic, r.key, r.value, list(r.headers)) for r in records)
        # Anything beyond the expected count would be a duplicate: give it a moment to show.
        await asyncio.sleep(0.5)
        for records in (await consumer.getmany(timeout_ms=500)).values():
            out.extend((r.topic, r.key, r.value, list(r.headers)) for r in records)
    finally:
        await consumer.stop()
    return out


async def paced(
    events: list[dict[str, Any]], rate: float, send: Callable[[dict[str, Any]], Awaitable[Any]]
) -> None:
    """Open loop: each event starts on its schedule, whatever the earlier ones are doing."""
    start = time.perf_counter()
    tasks = []
    for i, event in enumerate(events):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(event)))
    await asyncio.gather(*tasks)


def same_origin(url: str) -> dict[str, str]:
    """The Origin header a browser on the console's own page sends with a state change:
    a test client that uses the session cookie sends it too (engine/http/browser.py)."""
    return {"Origin": url}


def signing_keys() -> dict[str, str]:
    """A fresh Ed25519 key pair in a temporary directory, as settings:
    ``Settings.replace(**signing_keys())`` (or ``isolated(infra, **signing_keys())``)."""
    private, public = generate_keypair()
    directory = tempfile.mkdtemp(prefix="beacon-test-keys-")
    with open(f"{directory}/signing.key", "wb") as f:
        f.write(private)
    with open(f"{directory}/signing.pub", "wb") as f:
        f.write(public)
    return {"signing_key_file": f"{directory}/signing.key", "signing_public_keys": f"{directory}/signing.pub"}
