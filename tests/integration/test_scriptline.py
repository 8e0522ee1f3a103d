"""The decision path's own Redis connection (engine/store/scriptline.py) against a real
Redis: it survives what the client's pool would have hidden, and never mixes replies."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from engine.settings import Settings
from engine.store.redisio import connect
from engine.store.scriptline import ScriptLine

pytestmark = pytest.mark.integration

ECHO = "return ARGV[1]"
# Busy for ~300 ms inside Redis (a reply that arrives after its caller gave up).
SLOW = """
local t0 = redis.call('TIME')
repeat local t = redis.call('TIME')
until (t[1] - t0[1]) * 1000000 + (t[2] - t0[2]) > 300000
return ARGV[1]
"""


@pytest.fixture
async def client(infra: Settings) -> AsyncIterator[aioredis.Redis]:
    client = connect(infra)
    yield client
    await client.aclose()


async def line_client_id(client: aioredis.Redis) -> int:
    """The id Redis gives the line's connection: the one client that is not us."""
    own = await client.client_id()
    others = [c for c in await client.client_list() if int(c["id"]) != own and c["cmd"] == "evalsha"]
    assert others, "the line's connection is not listed"
    return int(others[-1]["id"])


async def test_a_connection_closed_by_redis_is_reopened_and_the_call_goes_through(
    client: aioredis.Redis,
) -> None:
    line, echo = ScriptLine(client), client.register_script(ECHO)
    assert await line.run(echo, ["k"], [b"one"]) == b"one"
    await client.client_kill_filter(_id=await line_client_id(client))
    assert await line.run(echo, ["k"], [b"two"]) == b"two"
    await line.close()


async def test_a_script_redis_lost_is_loaded_again(client: aioredis.Redis) -> None:
    line, echo = ScriptLine(client), client.register_script(ECHO)
    assert await line.run(echo, ["k"], [b"one"]) == b"one"
    await client.script_flush()
    assert await line.run(echo, ["k"], [b"two"]) == b"two"
    await line.close()


async def test_a_caller_that_gives_up_never_gets_its_reply_read_as_the_next_one(
    client: aioredis.Redis,
) -> None:
    line = ScriptLine(client)
    slow, echo = client.register_script(SLOW), client.register_script(ECHO)
    await client.script_load(SLOW)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(line.run(slow, ["k"], [b"late"]), 0.05)
    assert await line.run(echo, ["k"], [b"mine"]) == b"mine"
    await line.close()


async def test_a_script_error_is_raised_and_the_connection_stays_in_step(client: aioredis.Redis) -> None:
    line = ScriptLine(client)
    bad, echo = client.register_script("return redis.call('NOSUCHCOMMAND')"), client.register_script(ECHO)
    with pytest.raises(ResponseError):
        await line.run(bad, ["k"], [])
    with contextlib.suppress(Exception):
        first = await line_client_id(client)
    assert await line.run(echo, ["k"], [b"after"]) == b"after"
    assert await line_client_id(client) == first  # the same connection: nothing was dropped
    await line.close()


async def test_no_reply_within_the_store_timeout_is_a_timeout_and_the_line_recovers(infra: Settings) -> None:
    from redis.exceptions import TimeoutError as RedisTimeoutError

    client = connect(infra.replace(store_timeout_s=0.1))
    try:
        line = ScriptLine(client)
        slow, echo = client.register_script(SLOW), client.register_script(ECHO)
        await client.script_load(SLOW)
        with pytest.raises(RedisTimeoutError):
            await line.run(slow, ["k"], [b"late"])
        await asyncio.sleep(0.3)  # Redis is single-threaded: let the slow script finish
        assert await line.run(echo, ["k"], [b"mine"]) == b"mine"
        await line.close()
    finally:
        await client.aclose()
