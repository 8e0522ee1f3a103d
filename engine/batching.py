"""Micro-batching without a timer: take whatever is queued when the handler is free.

At low rates every item goes out alone and at once; under load, items that arrive
while a batch is being handled form the next batch, so one Redis round trip serves
many events. Nothing waits for a batch to fill.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from engine.errors import BeaconError

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
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            items = [item for item, _ in batch]
            try:
                results = await self._handler(items)
            except Exception as exc:  # noqa: BLE001 - handed to every waiter
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
            else:
                for (_, fut), result in zip(batch, results, strict=True):
                    if not fut.done():
                        fut.set_result(result)
            self.batches += 1
            self.items += len(batch)
