"""The per-credential token bucket, on an injected clock (no sleeping, no wall time)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import ConfigError
from engine.http.guard import ANONYMOUS
from engine.http.ratelimit import RateLimiter
from engine.service.metrics import Metrics
from engine.store.users import Principal


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(rate: float, burst: int, **kw: int) -> tuple[RateLimiter, Clock]:
    clock = Clock()
    return RateLimiter(rate, burst, clock=clock, **kw), clock


def test_a_burst_goes_through_then_the_next_waits_for_one_token() -> None:
    limit, _ = limiter(10.0, 5)
    assert [limit.take("atm") for _ in range(5)] == [0.0] * 5
    assert limit.take("atm") == pytest.approx(0.1)


def test_tokens_refill_at_the_rate_and_never_beyond_the_burst() -> None:
    limit, clock = limiter(10.0, 5)
    for _ in range(5):
        limit.take("atm")
    clock.now += 0.25  # 2.5 tokens
    assert [limit.take("atm") for _ in range(2)] == [0.0, 0.0]
    assert limit.take("atm") == pytest.approx(0.05)  # half a token left
    clock.now += 3600.0  # an hour idle refills to the burst, not to 36,000
    assert sum(limit.take("atm") == 0.0 for _ in range(10)) == 5


def test_callers_do_not_share_a_bucket() -> None:
    limit, _ = limiter(1.0, 1)
    assert limit.take("channel-atm") == 0.0
    assert limit.take("channel-atm") > 0.0
    assert limit.take("channel-mobile") == 0.0
    assert limit.take("127.0.0.1") == 0.0


def test_a_refused_request_takes_nothing() -> None:
    limit, clock = limiter(1.0, 1)
    limit.take("atm")
    for _ in range(100):  # hammering while empty does not push the next token further out
        assert limit.take("atm") == pytest.approx(1.0)
    clock.now += 1.0
    assert limit.take("atm") == 0.0


def test_zero_rate_is_off() -> None:
    limit, _ = limiter(0.0, 0)
    assert not limit.enabled
    assert all(limit.take("atm") == 0.0 for _ in range(10_000))
    assert len(limit) == 0  # and keeps nothing


def test_a_burst_below_one_is_refused() -> None:
    with pytest.raises(ConfigError):
        RateLimiter(5.0, 0)


def test_memory_is_bounded_by_the_least_recently_used_caller() -> None:
    limit, _ = limiter(1.0, 1, max_callers=3)
    for caller in ("a", "b", "c"):
        limit.take(caller)
    limit.take("a")  # a is recent again; b is now the oldest
    limit.take("d")
    assert len(limit) == 3
    assert limit.take("a") > 0.0 and limit.take("c") > 0.0 and limit.take("d") > 0.0
    assert limit.take("b") == 0.0  # forgotten, so it starts full


def test_a_clock_stepping_back_refills_nothing() -> None:
    limit, clock = limiter(1.0, 1)
    limit.take("atm")
    clock.now -= 100.0
    assert limit.take("atm") > 0.0


@settings(max_examples=300, derandomize=True)
@given(
    st.floats(0.5, 5000.0),
    st.integers(1, 50),
    st.lists(st.floats(0.0, 2.0, allow_nan=False), min_size=1, max_size=200),
)
def test_never_more_than_burst_plus_rate_times_elapsed(rate: float, burst: int, gaps: list[float]) -> None:
    limit, clock = limiter(rate, burst)
    start = clock.now
    allowed = 0
    for gap in gaps:
        clock.now += gap
        wait = limit.take("atm")
        assert wait >= 0.0 and math.isfinite(wait)
        if wait == 0.0:
            allowed += 1
            continue
        # The wait it announces is at most one token's time, and enough: after it, the
        # request goes through.
        assert wait <= 1.0 / rate + 1e-9
        clock.now += wait * (1 + 1e-9)
        assert limit.take("atm") == 0.0
        allowed += 1
    assert allowed <= burst + rate * (clock.now - start) + 1e-6


def test_the_web_layer_keys_by_principal_or_by_address_without_authentication() -> None:
    from agents.web import throttle  # the one place the HTTP API applies the limit

    metrics = Metrics(process=False)
    limit, _ = limiter(0.001, 1)
    one, two = SimpleNamespace(remote="10.0.0.1"), SimpleNamespace(remote="10.0.0.2")
    assert throttle(limit, metrics, ANONYMOUS, one) is None  # type: ignore[arg-type]
    refused = throttle(limit, metrics, ANONYMOUS, one)  # type: ignore[arg-type]
    assert refused is not None and refused.status == 429
    assert orjson.loads(refused.body)["error"]["code"] == "rate_limited"
    assert refused.headers["Retry-After"] == "1000"
    assert throttle(limit, metrics, ANONYMOUS, two) is None  # type: ignore[arg-type]
    # With authentication, the principal is the caller, wherever it connects from.
    atm = Principal("atm-channel", "channel", "atm")
    assert throttle(limit, metrics, atm, one) is None  # type: ignore[arg-type]
    assert throttle(limit, metrics, atm, two) is not None  # type: ignore[arg-type]
    assert metrics.registry.get_sample_value("beacon_rate_limited_total", {"reason": "credential"}) == 2.0


def test_the_worker_sheds_beyond_its_own_rate_whoever_asks() -> None:
    """Issue 14, finding 8: each credential within its rate could still together push a
    worker past what it serves in budget; the worker-wide bucket sheds the excess."""
    from agents.web import shed

    worker, clock = limiter(10.0, 2)
    metrics = Metrics(process=False)
    assert shed(worker, metrics) is None and shed(worker, metrics) is None
    refused = shed(worker, metrics)
    assert refused is not None and refused.status == 429
    assert (
        orjson.loads(refused.body)["error"]["code"] == "overloaded" and refused.headers["Retry-After"] == "1"
    )
    clock.now += 0.1
    assert shed(worker, metrics) is None
    assert metrics.registry.get_sample_value("beacon_rate_limited_total", {"reason": "worker"}) == 1.0
