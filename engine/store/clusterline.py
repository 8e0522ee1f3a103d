"""Script calls on a Redis Cluster: one call per slot group, every node's calls sent at once
(on one Redis, in one pipeline: the outbox uses it for both).

On one Redis the decision path sends a batch as one script call on a connection of its
own (engine/store/scriptline.py). On a cluster each call must stay in one slot, so the
state adapter splits a batch by slot group (engine/store/layout.py) and hands the calls
here: redis-py's cluster pipeline sends each node its commands in one write, the nodes
concurrently, and follows MOVED and ASK (a slot moved, a failover) by itself.

A script a node does not hold (a promoted replica, a restarted node) is loaded on every
primary and only the calls that missed it are sent again; any other error of any call
is raised (engine/store/redisio.py converts it), after the calls that succeeded took
effect: the scripts are idempotent by event id, so the caller's retry is safe.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

ScriptCall = tuple[AsyncScript, Sequence[str], Sequence[Any]]


class ClusterLine:
    """``await line.run(calls, reads)``: the script calls' replies and the reads' replies."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._redis = client

    async def run(
        self, calls: Sequence[ScriptCall], reads: Sequence[Sequence[Any]] = ()
    ) -> tuple[list[Any], list[Any]]:
        replies = await self._send(calls, reads)
        missed = [i for i, reply in enumerate(replies[: len(calls)]) if isinstance(reply, NoScriptError)]
        if missed:
            for script in {c[0].sha: c[0] for c in calls}.values():
                await self._redis.script_load(script.script)
            again = await self._send([calls[i] for i in missed], ())
            for i, reply in zip(missed, again, strict=True):
                replies[i] = reply
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply
        return replies[: len(calls)], replies[len(calls) :]

    async def _send(self, calls: Sequence[ScriptCall], reads: Sequence[Sequence[Any]]) -> list[Any]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for script, keys, args in calls:
                # EVALSHA by name: redis-py blocks its pipelined evalsha() on a cluster, yet
                # routes the command by its keys, which is all this needs.
                pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
            for command in reads:
                pipe.execute_command(*command)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies
