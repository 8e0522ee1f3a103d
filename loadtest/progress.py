"""A one-line progress bar on stderr while a phase runs (only when stderr is a terminal).

It shows how far the schedule is, what was answered, and the p99 so far, so a phase
that is going wrong is visible before it ends. Nothing is printed when stderr is not a
terminal (CI, ``make bench > log``), and the line is cleared when the phase ends.

>>> line("HTTP path @ 500/s", sent=2500, total=5000, answered=2490, p99_ms=12.345, width=100)
'HTTP path @ 500/s [#######.......]  50% p99 12.3 ms  sent 2500/5000  answered 2490'
>>> line("x", sent=0, total=0, answered=0, p99_ms=float("nan"), width=30)
'x [..............]   0% p99...'
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import shutil
import sys
from collections.abc import AsyncIterator, Callable
from typing import TextIO

Reading = tuple[int, int, float]  # sent, answered, p99 so far (ms)
BAR = 14


def line(label: str, sent: int, total: int, answered: int, p99_ms: float, width: int) -> str:
    """The text of the bar, cut to ``width`` characters."""
    done = sent / total if total else 0.0
    filled = int(done * BAR)
    p99 = "-" if math.isnan(p99_ms) else ("lost" if math.isinf(p99_ms) else f"{p99_ms:.1f} ms")
    text = (
        f"{label} [{'#' * filled}{'.' * (BAR - filled)}] {done * 100:3.0f}% "
        f"p99 {p99}  sent {sent}/{total}  answered {answered}"
    )
    return text if len(text) <= width else text[: max(width - 3, 0)] + "..."


class Bar:
    """Redraws one line every ``interval`` seconds from ``read()`` while a phase runs."""

    def __init__(self, stream: TextIO | None = None, interval: float = 0.5, enabled: bool | None = None):
        self.stream = stream or sys.stderr
        self.interval = interval
        self.enabled = self.stream.isatty() if enabled is None else enabled

    @contextlib.asynccontextmanager
    async def follow(self, label: str, total: int, read: Callable[[], Reading]) -> AsyncIterator[None]:
        if not self.enabled:
            yield
            return
        task = asyncio.get_running_loop().create_task(self._draw(label, total, read))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.stream.write("\r\x1b[K")
            self.stream.flush()

    async def _draw(self, label: str, total: int, read: Callable[[], Reading]) -> None:
        while True:
            await asyncio.sleep(self.interval)
            width = shutil.get_terminal_size((100, 20)).columns - 1
            sent, answered, p99 = read()
            self.stream.write("\r\x1b[K" + line(label, sent, total, answered, p99, width))
            self.stream.flush()
