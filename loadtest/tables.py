"""The Markdown tables of a load-test report, each from the phases of a results dict.

A phase is the dict :meth:`loadtest.openloop.Phase.to_dict` gives (or a results.json
holds); fields added later are read with defaults so older results still render.

>>> fmt_ms(1.23456), fmt_ms(float("inf")), fmt_ms(float("nan")), fmt_ms(123.4)
('1.23', 'lost', '-', '123')
>>> print(table(["a", "b"], [[1, 2]]))
| a | b |
| --- | --- |
| 1 | 2 |
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from loadtest.stats import ratio

Ph = dict[str, Any]
FLOOR_OF = {"kafka": "broker", "http": "echo"}  # the bare floor of each decision path
BOUND_MS = 25.0  # the "sustainable": p99 under 25 ms
SETTINGS_SHOWN = (
    "partitions",
    "batch_max",
    "fetch_max_wait_ms",
    "producer_linger_ms",
    "commit_interval_s",
    "rebalance_timeout_s",
    "store_timeout_s",
    "decision_timeout_s",
    "retention_ms",
    "log_level",
)


def fmt_ms(x: float) -> str:
    if math.isnan(x):
        return "-"
    if math.isinf(x):
        return "lost"
    return f"{x:.2f}" if x < 100 else f"{x:.0f}"


def fmt_x(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.1f}x"


def num(x: float | None, digits: int = 0) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:.{digits}f}"


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def workers(ph: Ph) -> int:
    return int(ph.get("workers") or 1)


def p(phase: Ph | None, key: str) -> float:
    return float(phase["summary"][key]) if phase else math.nan


def find(phases: Sequence[Ph], path: str, rate: float, n_workers: int = 1) -> Ph | None:
    """The first phase of ``path`` at ``rate`` (with ``n_workers`` workers for the paths)."""
    for ph in phases:
        if (
            ph["path"] == path
            and ph["rate"] == rate
            and (ph["path"] not in FLOOR_OF or workers(ph) == n_workers)
        ):
            return ph
    return None


def floor_for(phases: Sequence[Ph], ph: Ph) -> tuple[Ph | None, bool]:
    """The floor phase of a path phase: the same rate if measured (True), else the
    nearest measured rate (False)."""
    path = FLOOR_OF.get(ph["path"])
    floors = [q for q in phases if q["path"] == path and q["rate"] > 0]
    same = [q for q in floors if q["rate"] == ph["rate"]]
    if same:
        return same[0], True
    if not floors or ph["rate"] <= 0:
        return None, False
    return min(floors, key=lambda q: abs(math.log(q["rate"] / ph["rate"]))), False


def vs_floor(phases: Sequence[Ph], ph: Ph) -> str:
    """p50 / p99 / p99.9 each divided by the floor's, e.g. ``3.9x / 4.0x / 4.4x``;
    ``~`` marks a floor measured at the nearest rate rather than the same one."""
    floor, exact = floor_for(phases, ph)
    if floor is None:
        return "-"
    keys = ("p50_ms", "p99_ms", "p999_ms")
    text = " / ".join(fmt_x(ratio(p(ph, k), p(floor, k))) for k in keys)
    return text if exact else f"~{text} (@{floor['rate']:.0f}/s)"


def phase_rows(phases: Sequence[Ph], everything: Sequence[Ph] = ()) -> str:
    """Latency, throughput and CPU of each phase; path phases also against their floor
    (looked up in ``everything``: the run's phases)."""
    header = [
        "phase",
        "sent",
        "answered",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "vs floor: p50 / p99 / p99.9",
        "achieved/s",
        "drift ms",
        "sustained",
        "CPU % of a core: worker / broker / redis / client / other",
        "worker CPU ms per event",
    ]
    rows = []
    for ph in phases:
        s = ph["summary"]
        cpu = ph.get("cpu") or {}
        serial = ph["rate"] == 0
        rows.append(
            [
                ph["name"] + (" (stopped early)" if ph.get("stopped_early") else ""),
                s["sent"],
                s["answered"] if not s["errors"] else f"{s['answered']} ({s['errors']} errors)",
                fmt_ms(s["p50_ms"]),
                fmt_ms(s["p99_ms"]),
                fmt_ms(s["p999_ms"]),
                fmt_ms(s["max_ms"]),
                vs_floor(everything or phases, ph) if ph["path"] in FLOOR_OF else "-",
                f"{ph['achieved_rate']:.0f}",
                "-" if serial else f"{ph['drift_ms']:.1f}",
                "-" if serial else ("yes" if ph["sustained"] else "**no**"),
                "-"
                if not cpu
                else " / ".join(_cpu(cpu, k) for k in ("worker", "broker", "redis", "client", "other")),
                num(ph.get("extra", {}).get("worker_cpu_ms_per_event"), 2),
            ]
        )
    return table(header, rows)


def _cpu(cpu: dict[str, float], name: str) -> str:
    return f"{cpu[name]:.0f}" if name in cpu else "-"


def ratios(phases: Sequence[Ph]) -> str:
    """Each path's p50 / p99 / p99.9 against the bare floor with the same client and rate,
    and its p50 against the floor's one-at-a-time round trip."""
    rows = []
    for ph in phases:
        if ph["path"] not in FLOOR_OF:
            continue
        floor_path = FLOOR_OF[ph["path"]]
        serial_floor = find(phases, floor_path, 0)
        same = find(phases, floor_path, ph["rate"])
        rows.append(
            [
                ph["name"],
                f"{floor_path} @ {ph['rate']:.0f}/s" if same else "-",
                fmt_ms(p(same, "p50_ms")),
                fmt_x(ratio(p(ph, "p50_ms"), p(same, "p50_ms"))),
                fmt_x(ratio(p(ph, "p99_ms"), p(same, "p99_ms"))),
                fmt_x(ratio(p(ph, "p999_ms"), p(same, "p999_ms"))),
                fmt_ms(p(serial_floor, "p50_ms")),
                fmt_x(ratio(p(ph, "p50_ms"), p(serial_floor, "p50_ms"))),
            ]
        )
    header = [
        "path phase",
        "floor at same rate",
        "floor p50 ms",
        "p50 / floor p50",
        "p99 / floor p99",
        "p99.9 / floor p99.9",
        "serial floor p50 ms",
        "p50 / serial floor p50",
    ]
    return table(header, rows)


def stages(phases: Sequence[Ph]) -> str:
    """Where a path's time goes, from the workers' own histograms over the phase: their
    decision latency, events per Redis round trip, and each stage's mean and p99."""
    evalsha = find(phases, "redis", 0.0)
    for q in phases:  # the EVALSHA floor, not PING: the state stage is one script call
        if q["path"] == "redis" and "EVALSHA" in q["name"]:
            evalsha = q
    rows = []
    for ph in phases:
        if ph["path"] not in FLOOR_OF:
            continue
        x = ph.get("extra", {})
        st = x.get("stages") or {}
        batch = x.get("batch_mean") or x.get("events_per_batch_mean")
        rows.append(
            [
                ph["name"],
                fmt_ms(ph["summary"]["p50_ms"]),
                fmt_ms(x.get("server_mean_ms", math.nan)),
                fmt_ms(x.get("server_p99_ms", math.nan)),
                num(batch, 1),
                *(_stage(st.get(name)) for name in ("state", "models", "rules", "record", "publish")),
                fmt_x(ratio(_stage_mean(st.get("state")), p(evalsha, "p50_ms"))),
                fmt_ms(x.get("last_hop_p50_ms", math.nan)),
                num(x.get("worker_cpu_ms_per_event"), 2),
            ]
        )
    header = [
        "phase",
        "client p50 ms",
        "worker mean ms",
        "worker p99 ms",
        "events per batch",
        "state ms: mean (p99)",
        "models",
        "rules",
        "record",
        "publish",
        "state mean / Redis EVALSHA p50",
        "last hop p50 ms",
        "worker CPU ms per event",
    ]
    return table(header, rows)


def _stage(st: dict[str, Any] | None) -> str:
    if not st:
        return "-"
    return f"{fmt_ms(st['mean_ms'])} ({fmt_ms(st['p99_ms'])})"


def _stage_mean(st: dict[str, Any] | None) -> float:
    return float(st["mean_ms"]) if st else math.nan


def max_sustained(phases: Sequence[Ph], path: str, n_workers: int = 1) -> float:
    """The highest rate sustained with every lower measured rate sustained too."""
    best = 0.0
    runs = [q for q in phases if q["path"] == path and q["rate"] > 0 and workers(q) == n_workers]
    for ph in sorted(runs, key=lambda q: q["rate"]):
        if not ph["sustained"]:
            break
        best = ph["rate"]
    return best


def _first_failure(phases: Sequence[Ph], path: str, n_workers: int) -> float:
    bad = [q["rate"] for q in phases if q["path"] == path and workers(q) == n_workers and not q["sustained"]]
    return min(bad, default=math.inf)


def sustainable(phases: Sequence[Ph]) -> str:
    """For each path and number of workers: every rate tried (ladder and bisection,
    with its p99; failures in bold), and the highest sustainable rate it gives."""
    rows = []
    one: dict[str, float] = {}
    for path in ("http", "kafka"):
        counts = sorted({workers(q) for q in phases if q["path"] == path})
        for n in counts:
            tried = sorted(
                (q for q in phases if q["path"] == path and workers(q) == n), key=lambda q: q["rate"]
            )
            best = max_sustained(phases, path, n)
            if n == 1:
                one[path] = best
            bad = _first_failure(phases, path, n)
            rows.append(
                [
                    "HTTP" if path == "http" else "Kafka",
                    n,
                    ", ".join(_tried(q) for q in tried),
                    (f"**{best:.0f}/s**" if best else f"none (lowest tried {tried[0]['rate']:.0f}/s)")
                    + (f" (fails at {bad:.0f}/s)" if math.isfinite(bad) and best else ""),
                    f"{best / n:.0f}/s" if best else "-",
                    fmt_x(ratio(best, one.get(path, math.nan))) if n > 1 else "-",
                ]
            )
    header = [
        "path",
        "workers",
        "rates tried: p99 ms (not sustained in bold)",
        "highest sustainable",
        "per worker",
        "vs 1 worker",
    ]
    return table(header, rows)


def _tried(ph: Ph) -> str:
    text = f"{ph['rate']:.0f}: {fmt_ms(ph['summary']['p99_ms'])}"
    return text if ph["sustained"] else f"**{text}**"


def scaling(phases: Sequence[Ph]) -> str:
    """The same rates with one worker and with two (one consumer group; HTTP split
    across both workers' ports)."""
    rows = []
    for path in ("http", "kafka"):
        for one in (q for q in phases if q["path"] == path and workers(q) == 1 and q.get("role") != "search"):
            two = find([q for q in phases if q.get("role") != "search"], path, one["rate"], 2)
            if two is None:
                continue
            rows.append(
                [
                    f"{'HTTP' if path == 'http' else 'Kafka'} @ {one['rate']:.0f}/s",
                    _pcts(one),
                    _pcts(two),
                    fmt_x(ratio(p(two, "p99_ms"), p(one, "p99_ms"))),
                    f"{_p99_vs_floor(phases, one)} / {_p99_vs_floor(phases, two)}",
                    f"{one['achieved_rate']:.0f} / {two['achieved_rate']:.0f}",
                    f"{num(one.get('extra', {}).get('worker_cpu_ms_per_event'), 2)} / "
                    f"{num(two.get('extra', {}).get('worker_cpu_ms_per_event'), 2)}",
                ]
            )
    header = [
        "path @ rate",
        "1 worker: p50 / p99 / p99.9 ms",
        "2 workers: p50 / p99 / p99.9 ms",
        "p99 2 workers / 1",
        "p99 / floor p99: 1 / 2",
        "achieved/s: 1 / 2",
        "worker CPU ms per event: 1 / 2",
    ]
    return table(header, rows)


def _p99_vs_floor(phases: Sequence[Ph], ph: Ph) -> str:
    floor, exact = floor_for(phases, ph)
    if floor is None:
        return "-"
    return ("" if exact else "~") + fmt_x(ratio(p(ph, "p99_ms"), p(floor, "p99_ms")))


def _pcts(ph: Ph) -> str:
    s = ph["summary"]
    return f"{fmt_ms(s['p50_ms'])} / {fmt_ms(s['p99_ms'])} / {fmt_ms(s['p999_ms'])}"


def generators(phases: Sequence[Ph]) -> str:
    """Each generator process's share and lateness (its drift from the schedule)."""
    rows = []
    for ph in phases:
        for q in ph.get("procs") or ():
            rows.append(
                [ph["name"], q["proc"], q["sent"], num(q["late_p50_ms"], 2), num(q["late_p99_ms"], 2),
                 num(q["late_max_ms"], 1)]
            )  # fmt: skip
    header = ["phase", "process", "events sent", "late p50 ms", "late p99 ms", "late max ms"]
    return table(header, rows)


def targets(phases: Sequence[Ph]) -> str:
    http500, kafka500 = find(phases, "http", 500), find(phases, "kafka", 500)
    floor500 = find(phases, "broker", 500)
    k_max = max_sustained(phases, "kafka")
    rows: list[list[object]] = [
        _target("HTTP path p99 at 500/s", "<= 10 ms", p(http500, "p99_ms"), 10.0),
        [
            "Kafka path p50 at 500/s vs bare broker p50 at 500/s",
            "<= 3x",
            f"{fmt_ms(p(kafka500, 'p50_ms'))} ms vs {fmt_ms(p(floor500, 'p50_ms'))} ms = "
            + fmt_x(ratio(p(kafka500, "p50_ms"), p(floor500, "p50_ms"))),
            _verdict(ratio(p(kafka500, "p50_ms"), p(floor500, "p50_ms")), 3.0),
        ],
        _target("Kafka path p99 at 500/s", "<= 50 ms", p(kafka500, "p99_ms"), 50.0),
        [
            "Kafka path, highest rate sustained (of those measured)",
            ">= 2,000 events/s",
            f"{k_max:.0f} events/s",
            "met" if k_max >= 2000 else "**not met**",
        ],
    ]
    return table(["target", "goal", "measured", "verdict"], rows)


def _target(name: str, goal: str, value: float, bound: float) -> list[object]:
    return [name, goal, f"{fmt_ms(value)} ms", _verdict(value, bound)]


def _verdict(value: float, bound: float) -> str:
    if math.isnan(value):
        return "not measured"
    return "met" if value <= bound else "**not met**"


def best_throughput(phases: Sequence[Ph], path: str) -> str:
    """The highest answer rate a path achieved in any phase, and at which offered rate."""
    runs = [q for q in phases if q["path"] == path and q["rate"] > 0]
    if not runs:
        return "-"
    top = max(runs, key=lambda q: q["achieved_rate"])
    return f"{top['achieved_rate']:.0f}/s (offered {top['rate']:.0f}/s, {workers(top)} worker(s))"


def machine(info: dict[str, Any]) -> str:
    rows: list[list[object]] = [
        ["CPUs (nproc)", info["nproc"]],
        ["CPU model", info["cpu_model"]],
        ["memory", f"{info['memory_gb']} GB"],
        ["Python", info["python"]],
        ["OS", info["platform"]],
        ["load average at start", ", ".join(str(x) for x in info["load_avg_at_start"])],
        ["broker", f"{info['broker_binary']} (embedded, memory storage)"],
        ["Redis", f"{info['redis_server']} (embedded)"],
    ]
    rows += [[name, version] for name, version in info["packages"].items()]
    return table(["machine", ""], rows)


def settings_rows(worker: dict[str, Any], client: dict[str, Any]) -> str:
    rows: list[list[object]] = [[f"worker `{k}`", worker[k]] for k in SETTINGS_SHOWN if k in worker]
    rows += [
        ["client producer linger", f"{client['linger_ms']} ms"],
        ["client consumer fetch_max_wait_ms", client["fetch_max_wait_ms"]],
        ["client HTTP connection pool", client["http_pool"]],
        ["generator processes", client.get("procs", 1)],
        ["arrival rate over a phase", client.get("shape", "flat")],
        ["offers shown that customers answer", f"{client.get('responses', 0) * 100:g}%"],
        ["customers in the generated population", f"{client['population']:,}"],
        ["warm-up before each phase (discarded)", f"{client['warm_s']} s"],
        ["drain allowed after the last send", f"{client['drain_s']} s"],
        [
            "a phase stops early once unanswered events exceed",
            f"{client.get('backlog_s', '-')} s of its rate",
        ],
        ["sustained means", _sustained_text(client["kafka_bounds"], client["http_bounds"])],
    ]
    return table(["setting", "value"], rows)


def _sustained_text(kafka: dict[str, float], http: dict[str, float]) -> str:
    return (
        f"answered >= {kafka['min_answered'] * 100:g}% (errors count as unanswered), "
        f"achieved >= 95% of the rate, drift <= {kafka['max_drift_ms']:g} ms, "
        f"p99 <= {kafka['p99_ms']:g} ms (Kafka) / {http['p99_ms']:g} ms (HTTP), not stopped early"
    )


def rss(rss_mb: dict[str, dict[str, float]]) -> str:
    rows = [[name, v.get("start", "-"), v.get("max", "-"), v.get("end", "-")] for name, v in rss_mb.items()]
    return table(["process (sum over a group)", "RSS at start MB", "max MB", "at end MB"], rows)


def splice_section(doc: str, begin: str, end: str, body: str, heading: str = "") -> str:
    """``doc`` with the section between ``begin`` and ``end`` replaced by ``body``, or, when
    it has none yet, with the section appended (under ``heading``, if given). Each
    generator (bench, rulebench, wrkbench) rewrites only its own markers.

    >>> splice_section("a\\n<b>\\nold\\n<e>\\nz\\n", "<b>", "<e>", "new")
    'a\\n<b>\\nnew\\n<e>\\nz\\n'
    >>> splice_section("a\\n", "<b>", "<e>", "new\\n", heading="## H")
    'a\\n\\n## H\\n\\n<b>\\nnew\\n<e>\\n'
    """
    block = f"{begin}\n{body.rstrip(chr(10))}\n{end}"
    if begin in doc and end in doc:
        head, rest = doc.split(begin, 1)
        return head + block + rest.split(end, 1)[1]
    lead = doc.rstrip() + "\n\n" if doc.strip() else ""
    return lead + (heading + "\n\n" if heading else "") + block + "\n"
