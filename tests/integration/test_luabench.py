"""The Lua benchmark runs end to end on a few events (its numbers are not checked)."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest import luabench

pytestmark = pytest.mark.integration
FIXTURES = Path(__file__).parent / "fixtures"


def test_luabench_reports_both_scripts_and_the_floor(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--events", "40", "--warmup", "10", "--rounds", "1", "--floor-calls", "5", "--customers", "20"]
    assert luabench.main([*argv, "--baseline", str(FIXTURES)]) == 0
    out = capsys.readouterr().out
    for row in (
        "EVALSHA floor",
        "ingest.lua (before)",
        "commit.lua (before)",
        "ingest.lua (after)",
        "commit.lua (after)",
    ):
        assert f"| {row}" in out, out
    assert "the EVALSHA floor's" in out
