"""One load-test run at a fixed rate: ``python -m loadtest.run --rate 500 --duration 30``.

By default it starts an embedded Redis and broker and a fresh worker (exactly as the
integration tests do), measures the floors it can (bare broker round trip, Redis PING),
then drives the HTTP path and the Kafka path, each open loop for ``--duration`` seconds.
``--url`` targets a running worker's HTTP API; ``--kafka`` (with ``--topic-prefix``) a
running broker whose worker consumes ``<prefix>interactions``. It prints a summary and
writes JSON to loadtest/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import re
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import orjson
import uvloop

from engine.infra import start_embedded, wait_kafka
from engine.settings import Settings
from loadtest import http_driver, report
from loadtest.harness import ProcWatch, machine, new_run_dir, watch_embedded
from loadtest.phases import Lab, Options

log = logging.getLogger("loadtest")


@contextlib.asynccontextmanager
async def open_lab(opts: Options, kind: str, base: Settings | None = None) -> AsyncIterator[Lab]:
    """Embedded servers (unless ``base`` points at running ones), a watcher and a Lab."""
    run_dir = new_run_dir(kind)
    emb = None
    if base is None:
        emb = await asyncio.to_thread(start_embedded, Settings.build(), str(run_dir / "logs"))
        base = emb.settings_for(Settings.build())
        await asyncio.to_thread(wait_kafka, base)
    watch = ProcWatch()
    if emb is not None:
        watch_embedded(watch, emb)
    watch.start()
    try:
        yield Lab(base, run_dir, opts, watch)
    finally:
        gc.enable()  # phases turn it off while they measure
        await watch.stop()
        if emb is not None:
            emb.stop()


def results_of(lab: Lab, command: str, started: float, **more: Any) -> dict[str, Any]:
    names = ("broker", "redis", "worker", "echo", "client")
    return {
        "command": command,
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "elapsed_s": round(time.time() - started, 1),
        "machine": machine(),
        "worker_settings": lab.base.redacted(),
        "options": lab.opts.to_dict(),
        "phases": [p.to_dict() for p in lab.phases],
        "rss_mb": {n: lab.watch.rss_mb(n) for n in names if lab.watch.rss_mb(n)},
        "rss_samples": lab.watch.rss,
        "workers": lab.workers,
        "notes": notes(lab),
        "load_avg_at_end": [round(x, 2) for x in os.getloadavg()],
        **more,
    }


def notes(lab: Lab) -> list[str]:
    """Facts worth a line in the report: client lag, errors in the worker logs."""
    out = []
    for p in lab.phases:
        if p.client_lag_ms > 20:
            out.append(f"{p.name}: the client itself fired up to {p.client_lag_ms:.0f} ms late (counted).")
        if p.summary.errors:
            out.append(f"{p.name}: answers with errors {p.statuses}.")
    for w in lab.workers:
        text = Path(w["log"]).read_text(errors="replace") if Path(w["log"]).exists() else ""
        errors = len(re.findall(r"\bERROR\b|Traceback", text))
        if errors:
            out.append(f"worker {w['app_id']}: {errors} ERROR/Traceback lines in {w['log']}.")
    return out


def write_json(lab: Lab, results: dict[str, Any], out: Path | None = None) -> Path:
    path = out or lab.run_dir / "results.json"
    path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    return path


def run_with_uvloop(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for noisy in ("aiokafka", "kafka"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())


async def single_run(args: argparse.Namespace) -> int:
    started = time.time()
    external = bool(args.url or args.kafka)
    opts = Options(linger_ms=args.linger_ms, warm_s=args.warm, audit=not external)
    base = None
    if external:
        base = Settings.build(kafka_bootstrap=args.kafka or "", topic_prefix=args.topic_prefix)
    async with open_lab(opts, "run", base) as lab:
        if args.floor and not external:
            await lab.kafka_floor_serial(200)
            await lab.kafka_floor_rate(args.rate, min(args.duration, 10.0))
            await lab.redis_floor(1000)
        if external:
            if args.url and args.path in ("both", "http"):
                async with http_driver.session(opts.http_pool) as http:
                    await lab.http_phase(http, args.url.rstrip("/"), args.rate, args.duration)
            if args.kafka and args.path in ("both", "kafka"):
                await lab.kafka_run(lab.base, args.rate, args.duration, args.url)
        else:
            w = await lab.worker()
            try:
                if args.path in ("both", "http"):
                    async with http_driver.session(opts.http_pool) as http:
                        await lab.http_phase(http, w.url, args.rate, args.duration)
                if args.path in ("both", "kafka"):
                    await lab.kafka_run(w.settings, args.rate, args.duration, w.url)
            finally:
                lab._stop_worker(w)
        command = "python -m loadtest.run " + " ".join(sys.argv[1:])
        results = results_of(lab, command, started)
    path = write_json(lab, results)
    phases = results["phases"]
    print()
    print(report.phase_rows(phases))
    if any(p["path"] in ("broker", "echo") for p in phases):
        print()
        print(report.ratios(phases))
    print()
    print(report.rss(results["rss_mb"]))
    for note in results["notes"]:
        print("note:", note)
    print(f"\nresults: {path}")
    return 0  # targets are reported, not asserted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=500.0, help="events per second (default 500)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per path (default 30)")
    parser.add_argument("--path", choices=("both", "http", "kafka"), default="both")
    parser.add_argument("--url", help="HTTP API of a running worker, e.g. http://127.0.0.1:6066")
    parser.add_argument("--kafka", help="bootstrap of a running broker with a running worker")
    parser.add_argument("--topic-prefix", default="", help="that worker's topic prefix (with --kafka)")
    parser.add_argument("--linger-ms", type=float, default=1.0, help="client producer linger (default 1)")
    parser.add_argument("--warm", type=float, default=2.0, help="warm-up seconds before measuring")
    parser.add_argument("--no-floor", dest="floor", action="store_false", help="skip the floor phases")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0:
        parser.error("--rate and --duration must be positive")
    return run_with_uvloop(lambda: single_run(args))


if __name__ == "__main__":
    sys.exit(main())
