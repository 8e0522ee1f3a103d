"""A work-around for lost cancellations in awaited Redis calls (Python 3.11)."""

from __future__ import annotations

import asyncio


def raise_if_cancelling() -> None:
    """Re-raise a cancellation that a Redis call swallowed.

    redis-py sends each command inside ``asyncio.wait_for(..., socket_timeout)``; on
    Python 3.11 ``wait_for`` drops a ``task.cancel()`` that lands while the send completes
    (bpo-42130, CPython gh-86296; fixed in 3.12), so the command returns normally and a
    watcher told to stop goes on waiting forever. The request is still counted by
    ``Task.cancelling()``: honour it here."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
