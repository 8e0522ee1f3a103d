"""Per-credential rate limit of the HTTP API: a token bucket for each caller.

Pure: the clock is injected, so tests step time by hand. Each caller (a credential, or
a client address when there is none) has ``burst`` tokens that refill at ``rate_per_s``;
a request takes one, and a caller with none left is told how long until the next.

>>> now = [0.0]
>>> limit = RateLimiter(rate_per_s=2.0, burst=2, clock=lambda: now[0])
>>> limit.take("atm"), limit.take("atm"), limit.take("atm")
(0.0, 0.0, 0.5)
>>> limit.take("mobile")  # every caller has its own bucket
0.0
>>> now[0] = 0.5
>>> limit.take("atm")
0.0
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from engine.errors import ConfigError
from engine.http.api import Reply, error


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """``rate_per_s`` <= 0 turns the limit off (every ``take`` answers 0.0).

    At most ``max_callers`` buckets are kept, least recently used first out, so a flood
    of new client addresses cannot grow memory without bound. A caller forgotten that
    way starts again with a full bucket; one idle for ``burst / rate_per_s`` seconds has
    a full bucket anyway, so only more than ``max_callers`` callers active within that
    time can get more than their share, never less.
    """

    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        max_callers: int = 10_000,
    ) -> None:
        if rate_per_s > 0 and burst < 1:
            raise ConfigError(f"rate_limit_burst must be at least 1, got {burst}")
        self.rate_per_s = rate_per_s
        self.burst = float(burst)
        self._clock = clock
        self._max_callers = max_callers
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.rate_per_s > 0

    def take(self, caller: str) -> float:
        """Take one token: 0.0 if the request may go ahead, else the seconds to wait."""
        if not self.enabled:
            return 0.0
        now = self._clock()
        bucket = self._bucket(caller, now)
        # A clock that steps back (it should not: monotonic) refills nothing.
        bucket.tokens = min(self.burst, bucket.tokens + max(now - bucket.updated, 0.0) * self.rate_per_s)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate_per_s

    def _bucket(self, caller: str, now: float) -> _Bucket:
        bucket = self._buckets.get(caller)
        if bucket is None:
            bucket = self._buckets[caller] = _Bucket(self.burst, now)
            if len(self._buckets) > self._max_callers:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(caller)
        return bucket

    def __len__(self) -> int:
        return len(self._buckets)


def too_many(code: str, what: str, wait_s: float) -> Reply:
    """The 429 of every rate limit: ``code``, what was exceeded, and Retry-After."""
    retry = max(1, math.ceil(wait_s))  # Retry-After takes whole seconds
    return error(429, code, f"{what}; retry in {retry} s", **{"Retry-After": str(retry)})
