"""Start a worker as a child process and wait until it is ready (demo, tests, benchmarks)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path

from engine.errors import InfraError
from engine.ops.infra import die_with_parent, free_port
from engine.settings import Settings


def isolated(settings: Settings, tag: str | None = None, prefix: str = "t", **extra: object) -> Settings:
    """Settings whose topics, keys, consumer group and port no other run shares.

    Authentication is off unless asked for (``auth_required=True``): tests and benchmarks
    of the decision path call it directly; tests/integration/test_auth.py covers auth.
    Cookies are plain-http (``cookie_secure`` off: the workers bind to loopback) unless asked."""
    tag = tag or uuid.uuid4().hex[:8]
    options: dict[str, object] = {"auth_required": False, "cookie_secure": False, **extra}
    return settings.replace(
        topic_prefix=f"{prefix}{tag}.",
        key_prefix=f"{prefix}{tag}",
        app_id=f"beacon-{prefix}{tag}",
        http_port=free_port(),
        **options,
    )


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """SIGTERM, then SIGKILL if it has not gone within ``timeout``."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def settings_env(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment that makes a child process build exactly these settings."""
    env = dict(os.environ if base is None else base)
    for f in fields(settings):
        value = getattr(settings, f.name)
        env["BEACON_" + f.name.upper()] = ",".join(value) if isinstance(value, tuple) else str(value)
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
        """SIGKILL: no shutdown hooks, no offset commit (failure tests)."""
        self.proc.kill()
        self.proc.wait()

    def stop(self, timeout: float = 20.0) -> None:
        stop_process(self.proc, timeout)


def is_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=1) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_worker(settings: Settings, log_dir: Path, timeout: float = 60.0) -> WorkerProcess:
    log_path = log_dir / f"worker-{settings.app_id}-{settings.http_port}.log"
    settings = settings.replace(signing_key_file="")  # a worker never holds the private key
    return _start("worker", settings, log_path, lambda w: is_ready(w.url), timeout)


def _start(
    command: str, settings: Settings, log_path: Path, ready: Callable[[WorkerProcess], bool], timeout: float
) -> WorkerProcess:
    """Run ``beacon <command>`` with exactly these settings; return once ``ready`` says so."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", command],
            env=settings_env(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
    started = WorkerProcess(settings, proc, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise InfraError(f"{command} exited with code {proc.returncode}:\n{started.log()[-4000:]}")
        if ready(started):
            return started
        time.sleep(0.2)
    started.stop()
    raise InfraError(f"{command} not ready within {timeout:.0f} s:\n{started.log()[-4000:]}")


@contextlib.contextmanager
def running_worker(settings: Settings, log_dir: Path) -> Iterator[WorkerProcess]:
    worker = start_worker(settings, log_dir)
    try:
        yield worker
    finally:
        worker.stop()


def start_trainer(settings: Settings, log_dir: Path, timeout: float = 60.0) -> WorkerProcess:
    """The trainer process (``beacon trainer``); ready once it says so in its log."""
    log_path = log_dir / f"trainer-{settings.app_id}.log"
    return _start("trainer", settings, log_path, lambda t: "trainer ready" in t.log(), timeout)


@contextlib.contextmanager
def running_trainer(settings: Settings, log_dir: Path) -> Iterator[WorkerProcess]:
    trainer = start_trainer(settings, log_dir)
    try:
        yield trainer
    finally:
        trainer.stop()
