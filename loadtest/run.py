"""One load-test run at a fixed rate: ``python -m loadtest.run --rate 500 --duration 30``.

By default it starts an embedded Redis and broker and fresh workers (exactly as the
integration tests do), measures the floors with the same clients (bare broker round
trip, Redis PING, HTTP echo at the same rate), then drives the HTTP path and the Kafka
path, each open loop for ``--duration`` seconds. ``--url`` targets a running worker's
HTTP API; ``--kafka`` (with ``--topic-prefix``) a running broker whose worker consumes
``<prefix>interactions``. ``--shape day`` compresses a bank's day into the run,
``--procs N`` spreads the sending over N processes. It prints a summary and writes
``results.json``, ``summary.md`` and ``plot.png`` to ``loadtest/results/<run>/``.
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

from engine.ops.infra import start_embedded, wait_kafka
from engine.settings import Settings
from loadtest import report
from loadtest.harness import ProcWatch, machine, new_run_dir, watch_embedded
from loadtest.phases import Lab, Options
from loadtest.shape import SHAPES

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
        "started_at": started,
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
        late = max((q["late_max_ms"] for q in p.procs), default=p.client_lag_ms)
        if late > 20:
            out.append(f"{p.name}: the client itself fired up to {late:.0f} ms late (counted).")
        if p.summary.errors:
            out.append(f"{p.name}: answers with errors {p.statuses}.")
        if p.stopped_early:
            out.append(
                f"{p.name}: stopped early, more than {lab.opts.backlog_s:g} s of events unanswered "
                f"({p.summary.sent} of {int(p.rate * p.duration_s)} sent)."
            )
    for w in lab.workers:
        text = Path(w["log"]).read_text(errors="replace") if Path(w["log"]).exists() else ""
        errors = len(re.findall(r"\bERROR\b|Traceback", text))
        if errors:
            out.append(f"worker {w['app_id']}: {errors} ERROR/Traceback lines in {w['log']}.")
    return out


def write_json(results: dict[str, Any], path: Path) -> Path:
    path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    return path


def write_outputs(
    run_dir: Path, results: dict[str, Any], markdown: str, bench: bool = False
) -> dict[str, Path]:
    """results.json, summary.md and the plots of a run, in its directory."""
    out = {"results": write_json(results, run_dir / "results.json")}
    (run_dir / "summary.md").write_text(markdown + "\n")
    out["summary"] = run_dir / "summary.md"
    try:
        from loadtest import plot
    except ImportError as exc:  # matplotlib is a dev extra: the numbers do not need it
        log.warning("no plot (%s); install the dev extras", exc)
        return out
    if bench:  # many phases: the whole run on one time axis, and latency against the rate
        out["plot"] = plot.whole_run(results, run_dir / "plot.png")
        out["rates plot"] = plot.by_rate(results, run_dir / "rates.png")
    else:  # a few phases: one column each
        out["plot"] = plot.timeline(results, run_dir / "plot.png")
    return out


def run_with_uvloop(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for noisy in ("aiokafka", "kafka"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())


async def floors(lab: Lab, rate: float, duration: float) -> None:
    """The floors with the same clients, at the run's rate."""
    await lab.kafka_floor_serial(200)
    await lab.kafka_floor_rate(rate, min(duration, 10.0))
    await lab.redis_floor(1000)
    await lab.echo_floor(300, [rate], min(duration, 10.0))


async def embedded_paths(lab: Lab, args: argparse.Namespace) -> None:
    """Both paths against fresh workers (one consumer group)."""
    async with lab.worker_group(args.workers) as group:
        urls = [w.url for w in group]
        if args.path in ("both", "http"):
            async with lab.driver(lab.http_spec(urls)) as drv:
                await lab.http_phase(drv, urls, args.rate, args.duration, profiles=group[0].settings)
        if args.path in ("both", "kafka"):
            await lab.kafka_run(group[0].settings, args.rate, args.duration, urls)


async def external_paths(lab: Lab, args: argparse.Namespace) -> None:
    """Both paths against servers that are already running."""
    if args.url and args.path in ("both", "http"):
        urls = [args.url.rstrip("/")]
        async with lab.driver(lab.http_spec(urls)) as drv:
            await lab.http_phase(drv, urls, args.rate, args.duration)
    if args.kafka and args.path in ("both", "kafka"):
        await lab.kafka_run(lab.base, args.rate, args.duration, [args.url.rstrip("/")] if args.url else [])


async def single_run(args: argparse.Namespace) -> int:
    started = time.time()
    external = bool(args.url or args.kafka)
    opts = Options(
        linger_ms=args.linger_ms,
        warm_s=args.warm,
        audit=not external,
        procs=args.procs,
        shape=args.shape,
        responses=args.responses,
    )
    base = None
    if external:
        base = Settings.build(kafka_bootstrap=args.kafka or "", topic_prefix=args.topic_prefix)
    async with open_lab(opts, "run", base) as lab:
        if args.floor and not external:
            await floors(lab, args.rate, args.duration)
        await (external_paths if external else embedded_paths)(lab, args)
        command = "python -m loadtest.run " + " ".join(sys.argv[1:])
        results = results_of(lab, command, started)
    markdown = report.render_run(results)
    paths = write_outputs(lab.run_dir, results, markdown)
    print()
    print(markdown)
    print()
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0  # targets are reported, not asserted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=500.0, help="events per second (the mean; default 500)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per path (default 30)")
    parser.add_argument("--path", choices=("both", "http", "kafka"), default="both")
    parser.add_argument("--shape", choices=SHAPES, default="flat", help="flat, or day: a compressed bank day")
    parser.add_argument("--procs", type=int, default=1, help="generator processes (default 1)")
    parser.add_argument("--workers", type=int, default=1, help="workers in one consumer group (default 1)")
    parser.add_argument(
        "--responses",
        type=float,
        default=0.3,
        help="share of offers shown that customers answer (default 0.3)",
    )
    parser.add_argument("--url", help="HTTP API of a running worker, e.g. http://127.0.0.1:6066")
    parser.add_argument("--kafka", help="bootstrap of a running broker with a running worker")
    parser.add_argument("--topic-prefix", default="", help="that worker's topic prefix (with --kafka)")
    parser.add_argument("--linger-ms", type=float, default=1.0, help="client producer linger (default 1)")
    parser.add_argument("--warm", type=float, default=2.0, help="warm-up seconds before measuring")
    parser.add_argument("--no-floor", dest="floor", action="store_false", help="skip the floor phases")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0:
        parser.error("--rate and --duration must be positive")
    if args.procs < 1 or args.workers < 1:
        parser.error("--procs and --workers must be at least 1")
    if not 0 <= args.responses <= 1:
        parser.error("--responses is a share, between 0 and 1")
    return run_with_uvloop(lambda: single_run(args))


if __name__ == "__main__":
    sys.exit(main())
