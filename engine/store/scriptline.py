"""The decision path's own Redis connection for its two state scripts.

Every decision batch makes two script calls, ingest then commit. Through the client's
command machinery each costs ~115 us of worker CPU on this machine (a pool checkout that
probes the socket, the retry wrapper, redis-py's observability hooks, the release); on a
connection of its own the same call is ~55 us, most of it the two syscalls
(``python -m loadtest.scriptcall``). The micro-batcher calls the scripts one at a time, so
one connection serves them; the lock keeps that true for any other caller.

Failure semantics match the client's where it matters: a connection found closed is
reopened and the call sent once more (the scripts are idempotent by event id, as they
must be for Kafka redelivery anyway); a script the server lost (restart, SCRIPT FLUSH) is
loaded again; a timeout or a cancelled call drops the connection, since its reply may
still be on the way, and is not retried here: the caller decides (the Kafka path retries,
the HTTP path answers within its budget).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError


class ScriptLine:
    """``await line.run(script, keys, args)``: EVALSHA on a dedicated connection."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._pool = client.connection_pool
        # One deadline for the whole call instead of the connection's per-write and
        # per-read ones: on Python 3.11 each write timeout is a task of its own.
        self._timeout: float | None = self._pool.connection_kwargs.get("socket_timeout")
        self._conn: AbstractConnection | None = None
        self._lock = asyncio.Lock()

    async def run(self, script: AsyncScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        async with self._lock:
            try:
                return await self._call(script, keys, args)
            except RedisConnectionError:
                await self.close()  # closed under us (Redis restarted, idle timeout): once more
                return await self._call(script, keys, args)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.disconnect()

    async def _call(self, script: AsyncScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        if self._conn is None:
            pool = self._pool
            self._conn = pool.connection_class(**{**pool.connection_kwargs, "socket_timeout": None})
        conn = self._conn
        try:
            async with asyncio.timeout(self._timeout):
                if not conn.is_connected:
                    await conn.connect()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
                try:
                    return await _evalsha(conn, script.sha, keys, args)
                except NoScriptError:
                    await conn.send_command("SCRIPT", "LOAD", script.script, check_health=False)
                    script.sha = (await conn.read_response()).decode()
                    return await _evalsha(conn, script.sha, keys, args)
        except TimeoutError as exc:  # asyncio's: what the client would have raised
            await self.close()
            raise RedisTimeoutError(f"no reply within {self._timeout} s") from exc
        except ResponseError:
            raise  # Redis answered: the connection is in step
        except BaseException:
            await self.close()  # a reply may still be on its way: never read it as the next one's
            raise


async def _evalsha(conn: AbstractConnection, sha: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
    command = conn.pack_command("EVALSHA", sha, len(keys), *keys, *args)
    await conn.send_packed_command(command, check_health=False)
    return await conn.read_response()
