"""Alert changes from Redis pub/sub, one subscription per worker, fanned out in process.

Each live inbox (``GET /v1/alerts/stream``) used to hold a pub/sub connection of its own
from the pool every other Redis call shares, so enough open browser tabs took the worker's
whole pool. Here one task holds one subscription while anyone listens and copies each
change to every listener's bounded queue. A listener that falls ``queue_size`` changes
behind is ended rather than slowing the others or growing without bound (its browser
reconnects and reloads the list); when Redis fails, every listener ends the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from engine.errors import StoreError
from engine.store.cancel import raise_if_cancelling

log = logging.getLogger("beacon.alerts")
_ENDED = object()  # put on a listener's queue: the feed failed or the listener fell behind


class ChangeFeed:
    def __init__(self, client: aioredis.Redis, channel: str, queue_size: int = 256) -> None:
        self._client = client
        self._channel = channel
        self._queue_size = queue_size
        self._listeners: set[asyncio.Queue[Any]] = set()
        self._task: asyncio.Task[None] | None = None

    @property
    def listeners(self) -> int:
        return len(self._listeners)

    @contextlib.asynccontextmanager
    async def listen(self) -> AsyncIterator[AsyncIterator[dict[str, Any] | None]]:
        """Changes as they happen, and None after each second without one (keep-alives)."""
        queue: asyncio.Queue[Any] = asyncio.Queue(self._queue_size)
        self._listeners.add(queue)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._pump(), name="alert-change-feed")
        try:
            yield _messages(queue)
        finally:
            self._listeners.discard(queue)
            if not self._listeners and self._task is not None:
                self._task.cancel()
                self._task = None

    async def _pump(self) -> None:
        pubsub = self._client.pubsub()
        try:
            # A cluster client subscribing before any other command fails with a KeyError
            # (redis-py 8.1, redis/redis-py#4296): make it learn the slots first.
            await self._client.initialize()
            await pubsub.subscribe(self._channel)
            while True:
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                raise_if_cancelling()
                if msg is not None and msg.get("type") == "message":
                    self._fan_out(orjson.loads(msg["data"]))
        except RedisError as exc:
            log.warning("alert change feed lost its subscription: %s", exc)
            for queue in list(self._listeners):
                _end(queue)
        finally:
            with contextlib.suppress(RedisError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated

    def _fan_out(self, change: dict[str, Any]) -> None:
        for queue in list(self._listeners):
            try:
                queue.put_nowait(change)
            except asyncio.QueueFull:
                log.warning("an alert stream fell %d changes behind; ending it", self._queue_size)
                self._listeners.discard(queue)
                _end(queue)


def _end(queue: asyncio.Queue[Any]) -> None:
    with contextlib.suppress(asyncio.QueueEmpty):
        queue.get_nowait()  # make room: the end must get through
    queue.put_nowait(_ENDED)


async def _messages(queue: asyncio.Queue[Any]) -> AsyncIterator[dict[str, Any] | None]:
    while True:
        try:
            async with asyncio.timeout(1.0):
                item = await queue.get()
        except TimeoutError:
            yield None
            continue
        if item is _ENDED:
            raise StoreError("alert change feed ended: Redis failed or this stream fell behind")
        yield item
