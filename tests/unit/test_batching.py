"""The micro-batcher: no waiting at low rate, batches under load, errors to every waiter."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from engine.service.batching import MicroBatcher, Overloaded


async def test_items_queued_while_busy_form_one_batch() -> None:
    seen: list[list[int]] = []
    gate = asyncio.Event()

    async def handler(items: Sequence[int]) -> list[int]:
        seen.append(list(items))
        await gate.wait()
        return [i * 2 for i in items]

    b: MicroBatcher[int, int] = MicroBatcher(handler, max_batch=10, max_queue=100)
    b.start()
    first = b.submit_nowait(1)
    await asyncio.sleep(0)  # the loop takes item 1 alone
    rest = [b.submit_nowait(i) for i in range(2, 6)]
    gate.set()
    assert await first == 2
    assert [await f for f in rest] == [4, 6, 8, 10]
    assert seen == [[1], [2, 3, 4, 5]]
    await b.stop()


async def test_handler_error_reaches_every_waiter_and_the_loop_survives() -> None:
    calls = 0

    async def handler(items: Sequence[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("redis down")
        return list(items)

    b: MicroBatcher[int, int] = MicroBatcher(handler, max_batch=10, max_queue=10)
    b.start()
    futs = [b.submit_nowait(1), b.submit_nowait(2)]
    for f in futs:
        with pytest.raises(RuntimeError):
            await f
    assert await b.submit_nowait(3) == 3
    await b.stop()


async def test_full_queue_is_overloaded() -> None:
    async def handler(items: Sequence[int]) -> list[int]:
        return list(items)

    b: MicroBatcher[int, int] = MicroBatcher(handler, max_batch=1, max_queue=2)
    b.submit_nowait(1)
    b.submit_nowait(2)
    with pytest.raises(Overloaded):
        b.submit_nowait(3)
