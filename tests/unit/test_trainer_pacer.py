"""The trainer loop's pacer (agents/trainer.py): records are learned once every decision
partition still waiting on the broker has reached their event time; the rest wait in
memory, uncommitted, their partition paused. No broker: a consumer stand-in."""

from __future__ import annotations

from collections import namedtuple
from typing import Any

from agents.trainer import Pacer

TP = namedtuple("TP", "topic partition")
Rec = namedtuple("Rec", "offset")
A0, A1, FB = TP("audit", 0), TP("audit", 1), TP("feedback", 0)


class Consumer:
    def __init__(self) -> None:
        self.paused: set[Any] = set()
        self.positions = {A0: 0, A1: 0, FB: 0}

    def assignment(self) -> set[Any]:
        return {A0, A1, FB}

    def pause(self, *tps: Any) -> None:
        self.paused.update(tps)

    def resume(self, *tps: Any) -> None:
        self.paused.difference_update(tps)

    async def position(self, tp: Any) -> int:
        return self.positions[tp]


def audits(tp: Any, times: list[float], first: int = 0) -> list[tuple[str, Any, Any]]:
    return [("audit", {"event": {"ts": t}}, Rec(first + i)) for i, t in enumerate(times)]


def labels(times: list[float], first: int = 0) -> list[tuple[str, Any, Any]]:
    return [("label", {"ts": t}, Rec(first + i)) for i, t in enumerate(times)]


async def test_records_wait_for_the_slowest_decision_partition() -> None:
    consumer, pacer = Consumer(), Pacer("audit")
    # partition 0 fetched up to t=100, partition 1 only to t=10; both have more waiting
    fetched = {A0: audits(A0, [1, 50, 100]), A1: audits(A1, [5, 10]), FB: labels([8, 60])}
    got = pacer.admit(consumer, fetched, {A0: 5, A1: 5})
    assert sorted(b.get("ts") or b["event"]["ts"] for _, b in got) == [1, 5, 8, 10]
    assert consumer.paused == {A0, FB}  # they hold records past t=10: fetch no more of them
    consumer.positions = {A0: 3, A1: 2, FB: 2}
    offsets = await pacer.offsets(consumer)
    assert offsets == {A0: 1, A1: 2, FB: 1}  # the first record still held is not committed
    # partition 1 reaches t=70, with more waiting: the mark is 70
    got = pacer.admit(consumer, {A1: audits(A1, [70], first=2)}, {A0: 5, A1: 5})
    assert sorted(b.get("ts") or b["event"]["ts"] for _, b in got) == [50, 60, 70]
    assert consumer.paused == {A0}
    # nothing waits anywhere: everything held goes
    got = pacer.admit(consumer, {}, {A0: 0, A1: 0})
    assert [b["event"]["ts"] for _, b in got] == [100] and consumer.paused == set()
    consumer.positions = {A0: 3, A1: 3, FB: 2}
    assert await pacer.offsets(consumer) == consumer.positions


async def test_a_stalled_partition_holds_the_others_for_a_bounded_time() -> None:
    consumer, pacer = Consumer(), Pacer("audit", hold_s=0.0)
    pacer.admit(consumer, {A0: audits(A0, [100])}, {A0: 5, A1: 5})  # partition 1: nothing yet
    assert consumer.paused == {A0}
    got = pacer.admit(consumer, {}, {A0: 5, A1: 5})  # held longer than hold_s: let through
    assert [b["event"]["ts"] for _, b in got] == [100] and consumer.paused == set()
