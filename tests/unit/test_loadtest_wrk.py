"""wrk's output read into numbers, the targets judged and the section spliced (no I/O).

The samples are real output of Debian's wrk 4.1.0 with loadtest/wrk.lua: against a worker,
against the echo floor, and against a server made to answer 429 to every fifth request,
drop some connections and stall some answers past --timeout.
"""

from __future__ import annotations

import math

import pytest

from loadtest import wrkreport
from loadtest.wrkreport import TARGETS, Level, WrkRun, parse, splice, to_ms

WORKER_C16 = """Running 4s test @ http://127.0.0.1:35763
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    25.23ms    6.79ms  63.30ms   73.58%
    Req/Sec   317.05     50.19   404.00     61.25%
  Latency Distribution
     50%   24.28ms
     75%   28.61ms
     90%   33.36ms
     99%   48.63ms
  2542 requests in 4.03s, 2.07MB read
Requests/sec:    630.33
Transfer/sec:    524.60KB
"""

ECHO_C1 = """Running 4s test @ http://127.0.0.1:47747
  1 threads and 1 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   374.06us  458.18us  10.44ms   95.47%
    Req/Sec     3.01k   847.45     5.56k    70.73%
  Latency Distribution
     50%  224.00us
     75%  463.00us
     90%  586.00us
     99%    2.24ms
  12282 requests in 4.10s, 4.04MB read
Requests/sec:   2995.66
Transfer/sec:      0.98MB
"""

ERRORS_C1 = """Running 3s test @ http://127.0.0.1:18778
  1 threads and 1 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   127.31us  277.29us   5.36ms   98.76%
    Req/Sec   308.33    366.80   730.00     66.67%
  Latency Distribution
     50%   98.00us
     75%  108.00us
     90%  135.00us
     99%  413.00us
  404 requests in 3.06s, 60.05KB read
  Socket errors: connect 0, read 4, write 0, timeout 1
  Non-2xx or 3xx responses: 81
Requests/sec:    131.93
Transfer/sec:     19.61KB
"""

ERRORS_C16 = """Running 3s test @ http://127.0.0.1:18778
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   806.14us    1.04ms  19.05ms   94.41%
    Req/Sec     3.88k     2.52k    8.94k    62.96%
  Latency Distribution
     50%  568.00us
     75%    1.10ms
     90%    1.54ms
     99%    5.60ms
  10959 requests in 3.01s, 1.59MB read
  Socket errors: connect 0, read 114, write 0, timeout 8
  Non-2xx or 3xx responses: 2195
Requests/sec:   3642.43
Transfer/sec:    541.42KB
"""

REFUSED = "unable to connect to 127.0.0.1:1 Connection refused\n"


def test_a_clean_run_is_read_into_numbers() -> None:
    r = parse(WORKER_C16)
    assert (r.threads, r.connections, r.requests) == (2, 16, 2542)
    assert r.duration_s == pytest.approx(4.03)
    assert r.requests_per_s == pytest.approx(630.33)
    assert (r.avg_ms, r.stdev_ms, r.max_ms) == pytest.approx((25.23, 6.79, 63.30))
    assert r.percentiles_ms == pytest.approx({50.0: 24.28, 75.0: 28.61, 90.0: 33.36, 99.0: 48.63})
    assert (r.p50_ms, r.p90_ms, r.p99_ms) == pytest.approx((24.28, 33.36, 48.63))
    assert (r.non_2xx, r.socket_errors, r.errors) == (0, {}, 0)
    assert r.ok == 2542
    assert r.ok_per_s == pytest.approx(2542 / 4.03)


def test_microseconds_and_thousands_are_read_in_their_units() -> None:
    r = parse(ECHO_C1)
    assert (r.p50_ms, r.p90_ms, r.p99_ms) == pytest.approx((0.224, 0.586, 2.24))
    assert (r.avg_ms, r.stdev_ms, r.max_ms) == pytest.approx((0.37406, 0.45818, 10.44))
    assert r.requests == 12282


@pytest.mark.parametrize(
    ("text", "non_2xx", "sockets", "requests"),
    [
        (ERRORS_C1, 81, {"connect": 0, "read": 4, "write": 0, "timeout": 1}, 404),
        (ERRORS_C16, 2195, {"connect": 0, "read": 114, "write": 0, "timeout": 8}, 10959),
    ],
)
def test_non_2xx_answers_and_socket_errors_are_counted(
    text: str, non_2xx: int, sockets: dict[str, int], requests: int
) -> None:
    r = parse(text)
    assert r.non_2xx == non_2xx
    assert r.socket_errors == sockets
    assert r.errors == non_2xx + sum(sockets.values())
    assert r.ok == requests - non_2xx  # a 429 is not a decision
    assert r.ok_per_s == pytest.approx((requests - non_2xx) / r.duration_s)


def test_output_without_a_summary_is_refused() -> None:
    with pytest.raises(ValueError, match="no wrk summary"):
        parse(REFUSED)


def test_a_run_without_latency_flag_has_no_percentiles() -> None:
    text = WORKER_C16.split("  Latency Distribution")[0] + "  2542 requests in 4.03s, 2.07MB read\n"
    text += "Requests/sec:    630.33\n"
    r = parse(text)
    assert r.percentiles_ms == {}
    assert math.isnan(r.p99_ms)


@pytest.mark.parametrize("text", ["1.00s", "2.5m", "10h"])
def test_durations_of_every_unit(text: str) -> None:
    assert to_ms(text) == pytest.approx({"1.00s": 1000.0, "2.5m": 150_000.0, "10h": 36_000_000.0}[text])
    with pytest.raises(ValueError):
        to_ms("3 parsecs")


def _level(text: str, target: str = "worker", worker_cpu: float = 50.0) -> Level:
    r = parse(text)
    return Level(target, f"wrk -c{r.connections}", r, {target: worker_cpu}, window_s=r.duration_s)


def _fake(connections: int, p50: float, p99: float, ok: int, non_2xx: int = 0) -> WrkRun:
    return WrkRun(2, connections, ok + non_2xx, 1.0, ok + non_2xx, p50, 0.0, p99, {50.0: p50, 99.0: p99},
                  non_2xx=non_2xx, socket_errors={"connect": 0, "read": 0, "write": 0, "timeout": 0})  # fmt: skip


def test_targets_are_judged_on_the_right_level_and_measure() -> None:
    fast = [Level("worker", "", _fake(1, 1.0, 3.0, 1000)), Level("worker", "", _fake(16, 5.0, 15.0, 2500))]
    assert [t.verdict(wrkreport.find(fast, "worker", t.connections).run)[1] for t in TARGETS] == ["met"] * 3
    slow = [Level("worker", "", _fake(1, 1.3, 3.0, 1000)), Level("worker", "", _fake(16, 5.0, 21.0, 1999))]
    verdicts = [t.verdict(wrkreport.find(slow, "worker", t.connections).run) for t in TARGETS]
    assert verdicts == [
        ("1.30 ms", "**not met**"),
        ("1,999 decisions/s", "**not met**"),
        ("21.00 ms", "**not met**"),
    ]
    assert TARGETS[0].verdict(None) == ("-", "not measured")


def test_errors_fail_a_target_whatever_the_figure() -> None:
    run = _fake(16, 1.0, 2.0, 5000, non_2xx=3)
    assert TARGETS[1].verdict(run) == ("5,000 decisions/s", "**not met** (3 errors)")
    assert TARGETS[2].verdict(run) == ("2.00 ms", "**not met** (3 errors)")


def test_cpu_per_decision_counts_only_2xx_answers() -> None:
    lv = _level(ERRORS_C1)
    assert lv.cpu_ms_per_ok("worker") == pytest.approx(0.5 * 3.06 * 1000 / (404 - 81))
    assert math.isnan(lv.cpu_ms_per_ok("redis"))


def _render(levels: list[Level]) -> str:
    info = {"nproc": 2, "cpu_model": "cpu", "memory_gb": 8, "platform": "Linux", "python": "3.11",
            "packages": {"aiohttp": "3"}, "redis_server": "Redis server v=7", "load_avg_at_start": [1.0]}  # fmt: skip
    return wrkreport.render(
        levels,
        command="python -m loadtest.wrkbench",
        started="today",
        info=info,
        load_end=[2.0],
        wrk_version="wrk 4.1.0",
        duration_s=15,
        warm_s=3,
        customers=5000,
        worker_log="worker.log",
    )


def test_the_section_shows_errors_rather_than_hiding_them() -> None:
    text = _render([_level(ERRORS_C1), _level(ERRORS_C16), _level(ECHO_C1, "echo", 60.0)])
    assert "| **81** | **read 4, timeout 1** |" in text
    assert "| **2,195** | **read 114, timeout 8** |" in text
    assert "worker `-c1`: 81 non-2xx answers and 5 socket errors" in text
    assert "(see worker.log)" in text
    assert "**not met** (86 errors)" in text  # fast, but 86 of its answers were not decisions
    assert "| 0.22 | 2.24 | 0.4x |" in text  # the echo floor beside the worker at -c1
    assert "wrk 4.1.0" in text and "2 CPUs (nproc)" in text


def test_a_clean_section_has_no_notes() -> None:
    assert "Notes from this run" not in _render([_level(WORKER_C16), _level(ECHO_C1, "echo")])


def test_splice_rewrites_only_its_own_section() -> None:
    bench = "<!-- BEGIN GENERATED by loadtest.bench -->\nbench\n<!-- END GENERATED -->\n"
    rules = "<!-- BEGIN GENERATED by loadtest.rulebench -->\nrules\n<!-- END GENERATED by loadtest.rulebench -->\n"
    doc = "# Benchmarks\n\n" + bench + "\nnotes\n\n" + rules
    first = splice(doc, "one\n")
    assert first.startswith(doc.rstrip())
    assert first.endswith(f"{wrkreport.HEADING}\n\n{wrkreport.BEGIN}\none\n{wrkreport.END}\n")
    second = splice(first + "\nafter\n", "two\n")
    assert second == (first + "\nafter\n").replace("\none\n", "\ntwo\n")
    assert bench in second and rules in second
    assert splice("", "x\n").startswith(wrkreport.HEADING)
