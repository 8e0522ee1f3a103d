"""Micro-batching without a timer: take whatever is queued when the handler is free.

At low rates every item goes out alone and at once; under load, items that arrive
while a batch is being handled form the next batch, so one Redis round trip serves
many events. Nothing waits for a batch to fill.

A caller that stops waiting cancels its future (``asyncio.wait_for`` does, when the HTTP
budget runs out). A cancelled item still queued is skipped, so it never reaches Redis
behind its caller's back; one already in the batch being handled is decided anyway (its
records leave through the outbox like any other), and its result goes to ``on_orphan``
when one is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from engine.errors import BeaconError

log = logging.getLogger("beacon.batching")
T = TypeVar("T")
R = TypeVar("R")


class Overloaded(BeaconError):
    """The queue is full: the caller should shed load (HTTP 429) or wait."""


class MicroBatcher(Generic[T, R]):
    def __init__(
        self,
        handler: Callable[[Sequence[T]], Awaitable[Sequence[R]]],
        max_batch: int,
        max_queue: int,
    ) -> None:
        self._handler = handler
        self._max_batch = max_batch
        self._queue: asyncio.Queue[tuple[T, asyncio.Future[R]]] = asyncio.Queue(max_queue)
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.items = 0
        # Gets (item, result) of an item decided after its caller stopped waiting.
        self.on_orphan: Callable[[T, R], None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def submit_nowait(self, item: T) -> asyncio.Future[R]:
        """Queue an item or raise :class:`Overloaded` at once (the HTTP path)."""
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait((item, fut))
        except asyncio.QueueFull:
            raise Overloaded("decision queue is full") from None
        return fut

    async def submit(self, item: T) -> asyncio.Future[R]:
        """Queue an item, waiting for room (the Kafka path: backpressure on the stream)."""
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, fut))
        return fut

    async def _run(self) -> None:
        while True:
            batch = await self._next_batch()
            items = [item for item, _ in batch]
            try:
                results = await self._handler(items)
            except Exception as exc:  # noqa: BLE001 - handed to every waiter
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
            else:
                for (item, fut), result in zip(batch, results, strict=True):
                    if not fut.done():
                        fut.set_result(result)
                    else:  # its caller stopped waiting while the batch was handled
                        self._orphan(item, result)
            self.batches += 1
            self.items += len(batch)

    def _orphan(self, item: T, result: R) -> None:
        if self.on_orphan is None:
            return
        try:
            self.on_orphan(item, result)
        except Exception:  # the decision loop must outlive a failing callback
            log.exception("handling a result nobody waited for failed")

    async def _next_batch(self) -> list[tuple[T, asyncio.Future[R]]]:
        """Whatever is queued, up to ``max_batch`` items whose callers still wait."""
        batch: list[tuple[T, asyncio.Future[R]]] = []
        while not batch:
            entry = await self._queue.get()
            if not entry[1].cancelled():
                batch.append(entry)
        while len(batch) < self._max_batch and not self._queue.empty():
            entry = self._queue.get_nowait()
            if not entry[1].cancelled():
                batch.append(entry)
        return batch
