"""What the demo prints about speed: each decision's latency as the channel saw it, and
every 10 s a summary line (events/s and p50/p99 by path, alerts, the models' versions).

>>> s = DemoStats(now=0.0)
>>> for ms in (4.0, 5.0, 6.0, 40.0):
...     s.decided("http", ms)
>>> s.decided("kafka", 12.0); s.alerted(); s.models = "f-v3"
>>> print(s.summary(now=10.0))
last 10 s: http 0.4/s p50 5.5 ms p99 40.0 ms | kafka 0.1/s p50 12.0 ms p99 12.0 ms | alerts 1 | models f-v3
>>> s.summary(now=10.0).startswith("last 0 s")  # the window starts again
True
"""

from __future__ import annotations

import statistics
import time
from collections import OrderedDict

PATHS = ("http", "kafka")
_SENT_BOUND = 10_000  # events in flight on the Kafka path whose send time is remembered


class DemoStats:
    def __init__(self, now: float | None = None) -> None:
        self._since = time.monotonic() if now is None else now
        self._ms: dict[str, list[float]] = {p: [] for p in PATHS}
        self._alerts = 0
        self._sent: OrderedDict[str, float] = OrderedDict()
        self.models = ""

    def sent(self, event_id: str) -> None:
        """An event went to the broker now: its decision's latency is counted from here."""
        self._sent[event_id] = time.perf_counter()
        while len(self._sent) > _SENT_BOUND:
            self._sent.popitem(last=False)

    def answered(self, event_id: str) -> float | None:
        """Milliseconds since ``sent(event_id)``, once; None for an event not sent by us."""
        at = self._sent.pop(event_id, None)
        return None if at is None else (time.perf_counter() - at) * 1000.0

    def decided(self, path: str, ms: float) -> None:
        self._ms[path].append(ms)

    def alerted(self) -> None:
        self._alerts += 1

    def summary(self, now: float | None = None) -> str:
        """The line for the window since the last summary; starts a new window."""
        now = time.monotonic() if now is None else now
        span = max(now - self._since, 1e-9)
        parts = [_path_line(p, self._ms[p], span) for p in PATHS]
        line = f"last {now - self._since:.0f} s: " + " | ".join(parts)
        line += f" | alerts {self._alerts} | models {self.models or '(built-in)'}"
        self._since, self._alerts = now, 0
        self._ms = {p: [] for p in PATHS}
        return line


def _path_line(path: str, ms: list[float], span_s: float) -> str:
    if not ms:
        return f"{path} 0/s"
    ordered = sorted(ms)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return f"{path} {len(ms) / span_s:.1f}/s p50 {statistics.median(ordered):.1f} ms p99 {p99:.1f} ms"
