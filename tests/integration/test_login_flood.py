"""Issue 14, finding 2: an unauthenticated login flood on a real worker (auth on).

Concurrent wrong passwords get at most the limit of real password checks (the failure
counter is counted before it is checked, in one step); the flood neither stalls the
worker (scrypt runs off the event loop, and few logins at a time) nor locks the real
user out."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from engine.ops.launcher import WorkerProcess
from engine.settings import Settings
from engine.store.redisio import connect
from engine.store.users import AuthStore
from tests.helpers import isolated, running_worker

pytestmark = pytest.mark.integration
PASSWORD = "correct horse battery"
LIMIT = 5  # failed logins a minute per user and address
HANG_GUARD_S = 30.0  # a request that would otherwise hang forever; not a latency bound


async def _users(s: Settings, *names: str) -> None:
    client = connect(s)
    store = AuthStore(client, s.key_prefix)
    for name in names:
        await store.add_user(name, "risk_officer", PASSWORD)
    await client.aclose()


@pytest.fixture()
def worker(infra: Settings, tmp_path: Path) -> Iterator[WorkerProcess]:
    s = isolated(infra, auth_required=True)
    asyncio.run(_users(s, "mia", "noah"))
    with running_worker(s, tmp_path) as w:
        yield w


async def _login(http: httpx.AsyncClient, user: str, password: str) -> httpx.Response:
    return await http.post("/v1/login", content=orjson.dumps({"user": user, "password": password}))


async def _flood(url: str, user: str, n: int) -> Counter[int]:
    async with httpx.AsyncClient(base_url=url, timeout=HANG_GUARD_S) as http:
        answers = await asyncio.gather(*(_login(http, user, f"wrong password {i}") for i in range(n)))
    return Counter(r.status_code for r in answers)


def test_concurrent_wrong_passwords_get_at_most_the_limit_of_checks(worker: WorkerProcess) -> None:
    codes = asyncio.run(_flood(worker.url, "mia", 40))
    assert codes[401] <= LIMIT, codes  # a 401 is a password actually checked
    assert codes[401] + codes[429] + codes[503] == 40, codes
