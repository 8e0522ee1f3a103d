"""Shared helpers for integration tests: a real worker process and Kafka I/O."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from engine.infra import free_port
from engine.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def isolated(settings: Settings, **extra: object) -> Settings:
    """Settings with topic, key and group names no other test shares."""
    tag = uuid.uuid4().hex[:8]
    return settings.replace(
        topic_prefix=f"t{tag}.", key_prefix=f"k{tag}", app_id=f"beacon-{tag}", http_port=free_port(),
        **extra,
    )


def settings_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    for name, value in settings.__dict__.items():
        env["BEACON_" + name.upper()] = ",".join(value) if isinstance(value, tuple) else str(value)
    return env


@dataclass
class WorkerProcess:
    settings: Settings
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{self.settings.http_host}:{self.settings.http_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_worker(settings: Settings, log_dir: Path, timeout: float = 60.0) -> WorkerProcess:
    log_path = log_dir / f"worker-{settings.app_id}-{settings.http_port}.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "worker"],
            cwd=str(log_dir), env=settings_env(settings), stdout=out, stderr=subprocess.STDOUT,
        )
    worker = WorkerProcess(settings, proc, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited ({proc.returncode}):\n{worker.log()[-4000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(worker.url + "/readyz", timeout=1).status_code == 200:
                return worker
        time.sleep(0.2)
    worker.stop()
    raise RuntimeError(f"worker not ready in {timeout}s:\n{worker.log()[-4000:]}")


@contextlib.contextmanager
def running_worker(settings: Settings, log_dir: Path) -> Iterator[WorkerProcess]:
    worker = start_worker(settings, log_dir)
    try:
        yield worker
    finally:
        worker.stop()


async def consume_until(
    bootstrap: str, topics: list[str], want: int, timeout: float
) -> list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]]:
    """Read (topic, key, value, headers) from the start of topics until ``want`` records or timeout."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        *topics, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
        enable_auto_commit=False, fetch_max_wait_ms=50,
    )
    await consumer.start()
    out: list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < want and time.monotonic() < deadline:
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
