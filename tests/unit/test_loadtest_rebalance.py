"""The rebalance scenario's pure parts (loadtest.rebalance_phases): the workers' JSON logs
into rebalance windows, when the group counts as settled, and the phase table. The
scenario itself runs in tests/integration/test_many_workers.py."""

from __future__ import annotations

import doctest
from pathlib import Path

import orjson

from loadtest import rebalance_phases
from loadtest.rebalance_phases import (
    Answer,
    LogLine,
    Phase,
    latencies_ms,
    merged_logs,
    phase_rows,
    rebalance_end,
    settled,
)

REBALANCING = "Heartbeat failed for group g because it is rebalancing"


def test_docstring_examples_run() -> None:
    result = doctest.testmod(rebalance_phases)
    assert result.failed == 0 and result.attempted > 0


def _log(path: Path, *lines: tuple[str, str]) -> Path:
    body = [orjson.dumps({"ts": ts, "level": "info", "message": m}) for ts, m in lines]
    path.write_bytes(b"\n".join([*body, b"Traceback (not JSON): skipped"]))
    return path


def test_logs_merge_in_time_order_and_the_rebalance_ends_when_the_last_member_is_assigned(
    tmp_path: Path,
) -> None:
    a = _log(tmp_path / "a.log", ("2026-12-04T05:00:01.000+00:00", REBALANCING),
             ("2026-12-04T05:00:06.000+00:00", "generation id 2 app consumers id 2"))  # fmt: skip
    b = _log(tmp_path / "b.log", ("2026-12-04T05:00:06.500+00:00", "generation id 2 app consumers id 2"),
             ("2026-12-04T05:00:20.000+00:00", "generation id 3 app consumers id 3"))  # fmt: skip
    lines = merged_logs([a, b, tmp_path / "absent.log"])
    assert [x.worker for x in lines] == ["a", "a", "b", "b"]
    start = lines[0].at
    end = rebalance_end(lines, after=start)
    assert end is not None and end == (start + 5.5, 2)
    assert rebalance_end(lines, after=start + 30) is None


def test_settled_needs_every_member_on_the_newest_generation_and_quiet_heartbeats() -> None:
    lines = [LogLine(1.0, "a", "generation id 1 app consumers id 1"),
             LogLine(2.0, "b", "generation id 1 app consumers id 1")]  # fmt: skip
    assert settled(lines, workers=2, quiet_s=2.0, now=4.5)
    assert not settled(lines, workers=2, quiet_s=2.0, now=3.0)  # too recent
    assert not settled(lines, workers=3, quiet_s=2.0, now=9.0)  # a member missing
    later = [*lines, LogLine(3.0, "a", REBALANCING)]
    assert not settled(later, workers=2, quiet_s=2.0, now=4.5)
    moved = [*lines, LogLine(5.0, "a", "generation id 2 app consumers id 2")]
    assert not settled(moved, workers=2, quiet_s=2.0, now=9.0)  # b not yet on generation 2


def test_the_table_counts_each_event_in_the_phase_it_was_sent_and_its_first_decision() -> None:
    sent = {"e1": 0.0, "e2": 1.0, "e3": 5.0}
    answers = [Answer("e1", "d1", 0, 0.010), Answer("e2", "d2", 1, 4.0), Answer("e2", "d2", 1, 4.5),
               Answer("e3", "d3", 0, 5.020)]  # fmt: skip
    assert {k: round(v, 6) for k, v in latencies_ms(sent, answers).items()} == {
        "e1": 10.0,
        "e2": 3000.0,
        "e3": 20.0,
    }
    rows = phase_rows([Phase("before", 0.0, 1.0), Phase("during", 1.0, 5.0), Phase("after", 5.0, 6.0)],
                      sent, answers, t0=0.0)  # fmt: skip
    lines = rows.splitlines()
    assert lines[2].startswith("| before | 0.0-1.0 | 1 | 10 | 10 | 10 |")
    # the pause: nothing came out from 0.01 s to 4.0 s; e2 was repeated once
    assert lines[3].startswith("| during | 1.0-5.0 | 1 | 3,000 | 3,000 | 3,000 | 3.00 |")
    assert lines[3].endswith("| 1 |")
    assert lines[4].endswith("| 0 |")
