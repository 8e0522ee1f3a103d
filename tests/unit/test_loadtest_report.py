"""BENCHMARKS.md generation, the recorder and the scheduler of the load test (no I/O)."""

from __future__ import annotations

import math
from typing import Any

from loadtest import promtext, report
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
    assert "12.00 ms vs 5.00 ms = 2.4x | met" in text
    assert "| HTTP path p99 at 500/s | <= 10 ms | 6.00 ms | met |" in text
    assert "1000 events/s | **not met**" in text


def test_ratios_table_has_a_row_per_path_phase() -> None:
    text = report.ratios(PHASES)
    assert text.count("\n") == 1 + 5  # header, rule, five path phases
    assert "| kafka @ 500/s | broker @ 500/s | 5.00 | 2.4x | 3.0x | 4.00 | 3.0x |" in text


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


async def test_ramp_keeps_target_rates_and_refines() -> None:
    from loadtest.bench import ramp

    ran: list[float] = []

    async def run_one(rate: float) -> Any:
        ran.append(rate)
        return serial_result(f"r{rate}", "kafka", [0.001]) if rate <= 1000 else _unsustained(rate)

    await ramp([200, 500, 1000, 2000, 3000], run_one, refine=True, keep=[2000])
    assert ran == [200, 500, 1000, 2000, 1500]  # 3000 skipped, 2000 kept (a target), midpoint


def _unsustained(rate: float) -> Any:
    phase = serial_result(f"r{rate}", "kafka", [0.001])
    phase.sustained = False
    return phase
