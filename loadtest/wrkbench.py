"""The HTTP path under wrk, closed loop: ``python -m loadtest.wrkbench --out BENCHMARKS.md``.

One fresh worker started by the load harness exactly as ``loadtest.bench`` starts its
workers (embedded Redis and broker, auth off), the customers' profiles imported, a
warm-up, then Debian's ``wrk`` with ``loadtest/wrk.lua`` at 1, 4 and 16 connections, and
the aiohttp echo floor at 1 and 16 in the same run. For each run: wrk's rate and latency
percentiles, its non-2xx and socket-error counts, and the CPU the worker spent per
decision. Issue 13's wrk targets are judged. ``--quick`` is a short smoke version. Only
the section between this module's markers in ``--out`` is rewritten.

``--shadow DIR`` publishes the packs of DIR as a shadow rules version (engine/service/shadow.py)
once the worker runs, so each decision is made twice, and prints what the shadow did;
``--no-echo`` skips the echo floor (for A/B rounds of the worker alone).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from engine.settings import Settings
from loadtest import wrkreport
from loadtest.harness import Child, machine, start_echo
from loadtest.phases import Lab, Options, scrape_all, server_side
from loadtest.run import open_lab, run_with_uvloop, write_json
from loadtest.wrkreport import Level

SCRIPT = Path(__file__).resolve().parent / "wrk.lua"
CUSTOMERS = 5000
SETTLE_S = 0.5
TIMEOUT = "2s"  # wrk's own default, stated: a request unanswered this long is an error


@dataclass(frozen=True)
class Plan:
    duration_s: float
    warm_s: float
    worker: tuple[tuple[int, int], ...] = ((1, 1), (2, 4), (2, 16))  # (threads, connections)
    echo: tuple[tuple[int, int], ...] = ((1, 1), (2, 16))


FULL = Plan(duration_s=15, warm_s=3)
QUICK = Plan(duration_s=4, warm_s=1)


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit("wrk is not installed: `make wrk` installs Debian's (apt-get install wrk)")
    return found


def wrk_version(binary: str) -> str:
    """``wrk debian/4.1.0-3+b2 [epoll]`` (wrk -v prints it before its usage)."""
    out = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10, check=False)
    first = (out.stdout or out.stderr).strip().splitlines()
    return first[0].split(" Copyright")[0] if first else "wrk (version unknown)"


def wrk_args(threads: int, conns: int, seconds: float, url: str, run_id: str) -> list[str]:
    return [
        f"-t{threads}",
        f"-c{conns}",
        f"-d{seconds:g}s",
        "--latency",
        "--timeout",
        TIMEOUT,
        "-s",
        str(SCRIPT.relative_to(Path.cwd())) if SCRIPT.is_relative_to(Path.cwd()) else str(SCRIPT),
        url,
        "--",
        run_id,
        str(CUSTOMERS),
    ]


class Bench:
    def __init__(self, lab: Lab, plan: Plan, binary: str, shadow: str = "") -> None:
        self.lab, self.plan, self.binary, self.shadow = lab, plan, binary, shadow
        self.levels: list[Level] = []
        self._k = 0

    def _run_id(self, what: str) -> str:
        self._k += 1
        return f"{self.lab.tag}-{what}-{self._k}"  # event ids never repeat across runs

    async def wrk(self, args: list[str]) -> str:
        proc = await asyncio.create_subprocess_exec(
            self.binary, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out, _ = await proc.communicate()
        text = out.decode(errors="replace")
        if proc.returncode != 0:
            raise RuntimeError(f"wrk {' '.join(args)} exited {proc.returncode}:\n{text}")
        return text

    async def warm(self, url: str) -> None:
        await self.wrk(wrk_args(2, 4, self.plan.warm_s, url, self._run_id("warm")))

    async def measure(self, target: str, url: str, threads: int, conns: int, metrics: list[str]) -> Level:
        args = wrk_args(threads, conns, self.plan.duration_s, url, self._run_id(f"c{conns}"))
        await asyncio.sleep(SETTLE_S)  # what the last run left in flight is answered first
        before = await scrape_all(metrics)
        children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.lab.watch.mark()
        text = await self.wrk(args)
        cpu = self.lab.watch.cpu()
        window = self.lab.watch.window_s
        children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        used = children1.ru_utime + children1.ru_stime - children0.ru_utime - children0.ru_stime
        cpu["wrk"] = round(100.0 * used / max(window, 1e-9), 1)
        cpu["other"] = round(max(cpu.get("other", 0.0) - cpu["wrk"], 0.0), 1)  # wrk was in it
        server = server_side(before, await scrape_all(metrics), "http") if metrics else {}
        (self.lab.run_dir / f"wrk-{target}-c{conns}.txt").write_text(text)
        level = Level(target, "wrk " + " ".join(args), wrkreport.parse(text), cpu, window, server)
        self.levels.append(level)
        r = level.run
        print(
            f"{target:6} -c{conns:<3} {r.ok_per_s:8.0f}/s  p50 {r.p50_ms:6.2f}  p90 {r.p90_ms:6.2f}  "
            f"p99 {r.p99_ms:6.2f} ms  non-2xx {r.non_2xx}  socket errors {r.socket_errors or 0}  "
            f"{target} CPU {level.cpu_ms_per_ok(target):.3f} ms per answer",
            flush=True,
        )
        return level

    async def echo(self) -> None:
        child: Child | None = None
        try:
            child, url = await start_echo(self.lab.logs)
            self.lab.watch.add("echo", child.proc.pid)
            await self.warm(url)
            for threads, conns in self.plan.echo:
                await self.measure("echo", url, threads, conns, [])
        finally:
            self.lab.watch.remove("echo")
            if child is not None:
                child.stop()

    async def worker(self) -> str:
        async with self.lab.worker_group(1) as group:
            w = group[0]
            await self.lab.import_profiles(w.settings)  # all of the population: C000000..
            if self.shadow:
                await start_shadow(w.settings, w.url, Path(self.shadow))
            await self.warm(w.url)
            for threads, conns in self.plan.worker:
                await self.measure("worker", w.url, threads, conns, [w.url])
            if self.shadow:
                print(shadow_summary(await asyncio.to_thread(_get, f"{w.url}/metrics")), flush=True)
            return str(w.log_path)


def _get(url: str) -> str:
    import httpx

    return httpx.get(url, timeout=10).text


async def start_shadow(settings: Settings, url: str, folder: Path) -> None:
    """Publish ``folder`` as the shadow version and wait until the worker runs it."""
    import orjson

    from engine.rules.pack import read_bundle
    from engine.store.redisio import connect
    from engine.store.ruleshadow import ShadowStore
    from engine.store.signkeys import signer

    key = signer(settings) if settings.signing_key_file else None  # signed as `beacon rules` signs
    client = connect(settings)
    try:
        shadow = ShadowStore(client, settings.key_prefix, signer=key)
        version = await shadow.start(read_bundle(folder), "wrkbench")
    finally:
        await client.aclose()
    deadline = time.monotonic() + 30
    while not (orjson.loads(await asyncio.to_thread(_get, f"{url}/v1/rules"))["shadow"] or {}).get("running"):
        if time.monotonic() > deadline:
            raise SystemExit(f"the worker did not take up the shadow version {version} (see its log)")
        await asyncio.sleep(0.2)
    print(f"shadow version {version} from {folder} runs beside the live one", flush=True)


def shadow_summary(metrics_text: str) -> str:
    """The shadow's counters from a /metrics page, summed over their labels."""
    from prometheus_client.parser import text_string_to_metric_families

    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name.startswith("beacon_shadow_") and sample.name.endswith("_total"):
                totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    said = ", ".join(f"{k.removeprefix('beacon_shadow_')} {v:g}" for k, v in sorted(totals.items()))
    n = totals.get("beacon_shadow_evaluations_total", 0.0)
    cpu = totals.get("beacon_shadow_cpu_seconds_total", 0.0)
    per = f"; {1e3 * cpu / n:.3f} ms of worker CPU per shadowed decision" if n else ""
    return f"shadow: {said}{per}"


async def bench(args: argparse.Namespace) -> int:
    binary = wrk_binary()
    plan = QUICK if args.quick else FULL
    started = time.time()
    info = await asyncio.to_thread(machine)  # with the load average before anything starts
    opts = Options(population=CUSTOMERS, progress=False, audit=False)
    async with open_lab(opts, "wrk") as lab:
        b = Bench(lab, plan, binary, args.shadow)
        if not args.no_echo:
            await b.echo()
        worker_log = await b.worker()
    command = "python -m loadtest.wrkbench " + " ".join(args.argv)
    section = wrkreport.render(
        b.levels,
        command=command.strip(),
        started=datetime.fromtimestamp(started, UTC).strftime("%Y-%m-%d %H:%M UTC"),
        info=info,
        load_end=[round(x, 2) for x in os.getloadavg()],
        wrk_version=wrk_version(binary),
        duration_s=plan.duration_s,
        warm_s=plan.warm_s,
        customers=CUSTOMERS,
        worker_log=worker_log,
    )
    write_json({"command": command, "plan": plan.__dict__, "levels": [lv.to_dict() for lv in b.levels]},
               lab.run_dir / "results.json")  # fmt: skip
    print()
    print(section)
    if args.out:
        out = Path(args.out)
        existing = out.read_text(encoding="utf-8") if out.exists() else ""
        out.write_text(wrkreport.splice(existing, section), encoding="utf-8")
        print(f"wrote {out}; wrk's outputs in {lab.run_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.wrkbench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="", help="Markdown file whose wrk section is rewritten")
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK.duration_s:g} s runs, not {FULL.duration_s:g}"
    )
    parser.add_argument(
        "--shadow", default="", metavar="DIR", help="run DIR's packs as a shadow rules version"
    )
    parser.add_argument("--no-echo", action="store_true", help="skip the aiohttp echo floor")
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    return run_with_uvloop(lambda: bench(args))


if __name__ == "__main__":
    sys.exit(main())
