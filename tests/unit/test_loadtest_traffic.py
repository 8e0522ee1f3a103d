"""The load test's traffic: arrival shapes, offer responses, and dealing a schedule out
to several generator processes (no I/O)."""

from __future__ import annotations

import itertools
from collections import Counter

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.domain.events import parse_event
from engine.settings import Settings
from loadtest.kafka_driver import owner
from loadtest.openloop import Event, Job, respond
from loadtest.procs import SenderSpec, split
from loadtest.responses import Responder
from loadtest.shape import multiplier, peak, shaped_schedule


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(["flat", "day"]), st.floats(1.0, 500.0), st.floats(1.0, 20.0))
def test_schedule_is_computed_up_front_in_order(shape: str, rate: float, duration: float) -> None:
    n = max(int(rate * duration), 1)
    times = shaped_schedule(n, rate, duration, 100.0, shape)
    assert len(times) == n
    assert all(b >= a for a, b in itertools.pairwise(times))
    assert times[0] >= 100.0 and times[-1] <= 100.0 + duration


def test_day_shape_keeps_the_mean_rate_and_has_a_trough_and_peaks() -> None:
    rate, duration = 200.0, 48.0  # two seconds per compressed hour
    times = shaped_schedule(int(rate * duration), rate, duration, 0.0, "day")
    per_hour = Counter(int(t // 2.0) for t in times)
    assert sum(per_hour.values()) == 9600  # the mean rate over the run is the one asked for
    assert per_hour[3] < 0.15 * 400  # night trough: under 15% of the mean
    assert per_hour[12] > 1.5 * 400 and per_hour[19] > 1.7 * 400  # lunchtime and evening peaks
    assert per_hour[15] < per_hour[12]  # the afternoon dip between them
    assert sum(multiplier("day", k / 1000) for k in range(1000)) / 1000 == pytest.approx(1.0, rel=1e-3)
    assert peak("day") == pytest.approx(1.95, abs=0.01)


def test_unknown_shape_is_refused() -> None:
    with pytest.raises(ValueError):
        shaped_schedule(10, 10.0, 1.0, 0.0, "weekly")


def _decision(i: int, kind: str = "offer") -> dict[str, object]:
    return {
        "decision_id": f"d{i}",
        "event_id": f"e{i}",
        "customer_id": f"C{i:06d}",
        "channel": "mobile",
        "actions": [{"id": "risk_step_up", "kind": "risk"}, {"id": "gold", "kind": kind}],
    }


def test_responses_answer_a_share_of_offers_later_with_what_labels_read() -> None:
    r = Responder(share=0.5, accept=0.25, delay_s=(1.0, 2.0), seed=3, id_prefix="x")
    for i in range(2000):
        r.seen(_decision(i), at=float(i) * 0.001)
        r.seen(_decision(i, kind="fallback"), at=0.0)  # nothing a customer can take up
    assert r.shown == 2000
    assert r.take(now=0.9, ts=0.0) is None  # no answer before its delay
    answers = list(iter(lambda: r.take(now=100.0, ts=1795428000.0), None))
    assert 900 < len(answers) < 1100
    accepted = sum(a["attributes"]["response"] == "accepted" for a in answers)
    assert 0.18 < accepted / len(answers) < 0.32
    assert len({a["event_id"] for a in answers}) == len(answers)
    config = Settings.build(env={}, max_event_age_s=10 * 365 * 86400.0)
    ev = parse_event(orjson.dumps(answers[0]), config, 1795428000.0)  # valid for the worker
    assert ev.type == "offer_response" and ev.attributes["action_id"] == "gold"


def test_a_due_response_takes_the_slot_of_a_generated_event() -> None:
    r = Responder(share=1.0, delay_s=(0.0, 0.0), id_prefix="x")
    generated = Event("g1", b"C000001", b"{}")
    assert respond(r, generated) is generated  # nothing due: the generated event goes
    r.seen(_decision(7), at=0.0)
    slot = respond(r, generated)
    assert slot.key == b"C000007" and orjson.loads(slot.value)["type"] == "offer_response"


def _job(n: int) -> Job:
    events = [Event(f"e{i}", f"C{i % 37:06d}".encode(), b"{}") for i in range(n)]
    return Job(events, [i / 100 for i in range(n)], 5.0, 300, Responder(id_prefix="lt"))


def test_http_share_is_round_robin_with_the_common_schedule() -> None:
    shares = split(_job(10), SenderSpec("http"), 3)
    assert [len(s.events) for s in shares] == [4, 3, 3]
    assert shares[1].offsets == [0.01, 0.04, 0.07]
    assert [s.max_in_flight for s in shares] == [100, 100, 100]
    assert {s.responder.id_prefix for s in shares if s.responder} == {"lt-p0", "lt-p1", "lt-p2"}


def test_kafka_share_follows_the_partition_of_the_answers() -> None:
    shares = split(_job(200), SenderSpec("kafka", partitions=4), 2)
    assert sum(len(s.events) for s in shares) == 200
    for k, share in enumerate(shares):
        assert all(owner(ev.key, 4, 2) == k for ev in share.events)
        assert share.offsets == sorted(share.offsets)
    # every event of one customer goes to the same process (its answers come back there)
    owners = {ev.key: k for k, s in enumerate(shares) for ev in s.events}
    assert len(owners) == 37
