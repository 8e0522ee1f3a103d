"""BENCHMARKS.md generation, the recorder and the scheduler of the load test (no I/O)."""

from __future__ import annotations

import math
from typing import Any

from loadtest import promtext, report, tables
from loadtest.openloop import Recorder, run_schedule, serial_result
from loadtest.stats import summarize


def _phase(path: str, rate: float, p50: float, p99: float, ok: bool = True) -> dict[str, Any]:
    s = summarize([p50 / 1000] * 98 + [p99 / 1000] * 2, sent=100).to_dict()
    return {
        "name": f"{path} @ {rate:.0f}/s",
        "path": path,
        "rate": rate,
        "summary": s,
        "achieved_rate": rate,
        "drift_ms": 0.0,
        "sustained": ok,
        "cpu": {"worker": 50.0, "client": 20.0},
    }


PHASES = [
    _phase("broker", 0, 4, 8),
    _phase("broker", 500, 5, 10),
    _phase("kafka", 500, 12, 30),
    _phase("kafka", 1000, 14, 40),
    _phase("kafka", 2000, 400, 900, ok=False),
    _phase("kafka", 3000, 20, 40),  # sustained again, but only after a failure
    _phase("http", 500, 2, 6),
]


def test_max_sustained_stops_at_the_first_failure() -> None:
    assert report.max_sustained(PHASES, "kafka") == 1000
    assert report.max_sustained(PHASES, "http") == 500
    assert report.max_sustained(PHASES, "nothing") == 0


def test_targets_compare_with_the_floor_at_the_same_rate() -> None:
    text = report.targets(PHASES)
    assert "12.01 ms vs 5.00 ms = 2.4x | met" in text  # HDR: the bucket's top, within 0.1%
    assert "| HTTP path p99 at 500/s | <= 10 ms | 6.00 ms | met |" in text
    assert "1000 events/s | **not met**" in text


def test_ratios_table_has_a_row_per_path_phase() -> None:
    text = report.ratios(PHASES)
    assert text.count("\n") == 1 + 5  # header, rule, five path phases
    assert "| kafka @ 500/s | broker @ 500/s | 5.00 | 2.4x | 3.0x | 3.0x | 4.00 | 3.0x |" in text


def test_phase_rows_mark_lost_answers() -> None:
    lossy = _phase("kafka", 500, 12, 30)
    lossy["summary"] = summarize([0.01] * 90, sent=100).to_dict()
    text = report.phase_rows([lossy])
    assert "| lost |" in text


def test_splice_keeps_the_hand_written_intro() -> None:
    first = report.splice("# Intro\n\nwords\n", "table 1")
    assert first.startswith("# Intro\n\nwords\n\n" + report.BEGIN)
    second = report.splice(first + "\nfooter\n", "table 2")
    assert "table 1" not in second and "table 2" in second
    assert second.startswith("# Intro") and second.endswith("footer\n")


def test_promtext_delta_and_mean() -> None:
    before = promtext.parse('h_sum{path="kafka"} 1.0\nh_count{path="kafka"} 10\nc_total 2\n')
    after = promtext.parse('h_sum{path="kafka"} 1.5\nh_count{path="kafka"} 20\nc_total 5\n')
    d = promtext.delta(after, before)
    assert promtext.mean_ms(d, "h", 'path="kafka"') == 50.0
    assert promtext.total(d, "c_total") == 3.0
    assert math.isnan(promtext.mean_ms(d, "h", 'path="http"'))


async def test_recorder_counts_each_event_once() -> None:
    rec = Recorder([0.0, 1.0, 2.0])
    for i in range(3):
        rec.fired(i, late=0.0)
    rec.answer(0, 0.5)
    rec.answer(0, 0.7)  # a duplicate answer is not counted twice
    rec.fail(1, "503")
    assert not await rec.wait(0.0)
    rec.answer(2, 2.25)
    assert await rec.wait(1.0)
    s = rec.summary()
    assert (s.sent, s.answered, s.lost, s.errors) == (3, 2, 1, 1)
    assert rec.unexpected == 1 and dict(rec.statuses) == {"ok": 2, "503": 1}


async def test_run_schedule_fires_every_event_in_order() -> None:
    fired: list[int] = []

    async def fire(i: int) -> None:
        fired.append(i)

    await run_schedule([0.0, 0.0, 1.0], fire)  # long past: all due at once
    assert fired == [0, 1, 2]


def test_serial_result_rate() -> None:
    phase = serial_result("x", "redis", [0.001] * 10)
    assert phase.achieved_rate == 1000.0 and phase.summary.p50_ms == 1.0


async def test_ladder_keeps_target_rates_after_a_failure() -> None:
    from loadtest.bench import ladder

    ran: list[float] = []

    async def run_one(rate: float) -> Any:
        ran.append(rate)
        return serial_result(f"r{rate}", "kafka", [0.001]) if rate <= 200 else _unsustained(rate, p99_s=2.0)

    await ladder([100, 200, 300, 500, 1000], run_one, keep=[500])
    assert ran == [100, 200, 300, 500]  # 1000 skipped after a failure, 500 kept (a target)


async def test_search_bisects_after_the_ladder() -> None:
    from loadtest.bench import search

    ran: list[float] = []

    async def run_one(rate: float) -> Any:
        ran.append(rate)
        return _sustained(rate) if rate <= 300 else _unsustained(rate)

    ladder = [_sustained(100), _sustained(200), _unsustained(500)]
    steps = await search(ladder, run_one, steps=5)
    assert ran == [350, 280, 320, 300]  # bisection between 200 and 500, down to 10%
    assert [p.rate for p in steps] == ran


def _sustained(rate: float) -> Any:
    phase = serial_result(f"r{rate}", "kafka", [0.001])
    phase.rate = rate
    return phase


def _unsustained(rate: float, p99_s: float = 0.03) -> Any:
    phase = serial_result(f"r{rate}", "kafka", [p99_s])
    phase.rate = rate
    phase.sustained = False
    return phase


def _path(
    path: str, rate: float, p99: float, ok: bool, workers: int = 1, role: str = "ladder"
) -> dict[str, Any]:
    ph = _phase(path, rate, p99 / 2, p99, ok)
    ph.update(workers=workers, role=role, name=f"{path} x{workers} @ {rate:.0f}/s")
    return ph


RUN = [
    _phase("echo", 0, 0.3, 0.5),
    _phase("echo", 200, 1, 2),
    _phase("echo", 500, 1, 4),
    _phase("redis", 0, 0.2, 0.3) | {"name": "redis EVALSHA, serial"},
    _path("http", 200, 10, True),
    _path("http", 500, 80, False),
    _path("http", 350, 30, False, role="search"),
    _path("http", 280, 20, True, role="search"),
    _path("http", 200, 8, True, workers=2),
    _path("http", 500, 40, False, workers=2),
    _path("http", 350, 22, True, workers=2, role="search"),
]


def test_sustainable_table_lists_every_rate_tried_and_the_limit() -> None:
    text = tables.sustainable(RUN)
    assert "| HTTP | 1 | 200: 10.00, **280: 20.00**" not in text  # 280 held: not bold
    assert "200: 10.00, 280: 20.00, **350: 30.00**, **500: 80.00**" in text
    assert "| **280/s** (fails at 350/s) | 280/s | - |" in text
    assert "| HTTP | 2 |" in text and "**350/s** (fails at 500/s) | 175/s | 1.2x |" in text


def test_scaling_compares_the_same_rates_with_one_worker_and_two() -> None:
    text = tables.scaling(RUN)
    assert text.count("\n") == 1 + 2  # 200/s and 500/s: the search steps are not compared
    assert "| HTTP @ 200/s | 5.00 / 10.00 / 10.00 | 4.00 / 8.00 / 8.00 | 0.8x | 5.0x / 4.0x |" in text


def test_every_path_phase_is_quoted_against_its_floor() -> None:
    assert tables.vs_floor(RUN, RUN[4]) == "5.0x / 5.0x / 5.0x"  # echo @ 200/s
    nearest = tables.vs_floor(RUN, RUN[6])  # 350/s: no echo at that rate
    assert nearest.startswith("~") and nearest.endswith("(@500/s)")
    rows = report.phase_rows(RUN[4:6], RUN)
    assert "| 5.0x / 5.0x / 5.0x |" in rows


def test_stage_breakdown_reads_the_workers_histograms() -> None:
    ph = _path("kafka", 500, 30, True)
    ph["extra"] = {
        "server_mean_ms": 9.5,
        "server_p99_ms": 25.0,
        "batch_mean": 3.2,
        "stages": {"state": {"mean_ms": 0.46, "p99_ms": 2.0}, "publish": {"mean_ms": 4.1, "p99_ms": 10.0}},
        "worker_cpu_ms_per_event": 1.5,
    }
    text = tables.stages([ph, RUN[3]])
    assert "| 9.50 | 25.00 | 3.2 | 0.46 (2.00) | - | - | - | 4.10 (10.00) | 2.3x |" in text


def test_generator_processes_show_their_lateness() -> None:
    ph = _path("kafka", 500, 30, True)
    ph["procs"] = [
        {"proc": 0, "sent": 990, "late_p50_ms": 0.2, "late_p99_ms": 1.5, "late_max_ms": 3.0},
        {"proc": 1, "sent": 1010, "late_p50_ms": 0.3, "late_p99_ms": 40.0, "late_max_ms": 95.0},
    ]
    text = tables.generators([ph])
    assert "| kafka x1 @ 500/s | 1 | 1010 | 0.30 | 40.00 | 95.0 |" in text


def test_render_has_every_section_and_survives_old_results() -> None:
    results = {
        "command": "python -m loadtest.bench",
        "started": "2026-11-23 10:00:00 UTC",
        "elapsed_s": 100.0,
        "phases": [{k: v for k, v in q.items() if k not in ("workers", "role")} for q in RUN],
        "rss_mb": {"worker": {"start": 100.0, "max": 120.0, "end": 110.0}},
        "machine": {
            "nproc": 2,
            "cpu_model": "x",
            "memory_gb": 1,
            "python": "3.11",
            "platform": "linux",
            "load_avg_at_start": [0.1],
            "broker_binary": "tansu",
            "redis_server": "redis",
            "packages": {},
        },
        "worker_settings": {"partitions": 4},
        "options": {
            "linger_ms": 1.0,
            "fetch_max_wait_ms": 5,
            "http_pool": 256,
            "population": 10,
            "warm_s": 2,
            "drain_s": 10,
            "kafka_bounds": {"p99_ms": 100, "max_drift_ms": 20, "min_answered": 0.999},
            "http_bounds": {"p99_ms": 50, "max_drift_ms": 20, "min_answered": 0.999},
        },
    }
    text = report.render(results)
    headings = ("Targets", "Highest sustainable rate", "Scaling", "Where the time goes", "Floors")
    assert all(f"### {h}" in text for h in headings)
    assert "# Load test" in report.render_run(results)


def test_promtext_sums_workers_and_reads_bucket_quantiles() -> None:
    one = promtext.parse('s_bucket{le="0.001",stage="state"} 8\ns_bucket{le="0.01",stage="state"} 10\n'
                         's_bucket{le="+Inf",stage="state"} 10\n')  # fmt: skip
    two = promtext.parse('s_bucket{le="0.001",stage="state"} 0\ns_bucket{le="0.01",stage="state"} 10\n'
                         's_bucket{le="+Inf",stage="state"} 10\n')  # fmt: skip
    both = promtext.added([one, two])
    assert promtext.quantile_ms(both, "s", 0.4, 'stage="state"') == 1.0
    assert promtext.quantile_ms(both, "s", 0.5, 'stage="state"') == 10.0
    assert math.isnan(promtext.quantile_ms(both, "s", 0.5, 'stage="models"'))
