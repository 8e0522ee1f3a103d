"""``beacon demo`` shows the promise (issue 19, item 1): each decision printed with its
latency as the channel saw it, and every 10 s a summary line with events/s and p50/p99 by
path, alerts raised and the models' versions. Runs the real demo (its own embedded Redis
and broker, worker and trainer) for 22 s and reads what a new user would read."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
DECISION = re.compile(r"(kafka|http)\s+(\d+\.\d) ms  C\d{6}  -> ")
SUMMARY = re.compile(
    r"== last \d+ s: http [\d.]+/s .*\| kafka [\d.]+/s p50 [\d.]+ ms p99 [\d.]+ ms \| alerts \d+ \| models "
)


def test_the_demo_prints_each_decisions_latency_and_a_summary(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "engine.cli", "demo", "--duration", "22", "--rate", "10", "--customers", "50"],
        capture_output=True, text=True, timeout=240, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    paths = {m.group(1) for m in DECISION.finditer(out.stdout)}
    assert paths == {"kafka", "http"}, out.stdout[-2000:]
    assert SUMMARY.search(out.stdout), out.stdout[-2000:]
    assert "stopped; nothing left running." in out.stdout
