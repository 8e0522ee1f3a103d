"""Issue 14, finding 2: an unauthenticated login flood on a real worker (auth on).

Concurrent wrong passwords get at most the limit of real password checks (the failure
counter is counted before it is checked, in one step); the flood neither stalls the
worker (scrypt runs off the event loop, and few logins at a time) nor locks the real
user out."""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from engine.ops.launcher import WorkerProcess
from engine.settings import Settings
from engine.store.redisio import connect
from engine.store.users import AuthError, AuthStore
from tests.helpers import isolated, running_worker

pytestmark = pytest.mark.integration
PASSWORD = "correct horse battery"
LIMIT = 5  # failed logins a minute per user and address
HANG_GUARD_S = 30.0  # a request that would otherwise hang forever; not a latency bound


async def _users(s: Settings, *names: str) -> str:
    client = connect(s)
    store = AuthStore(client, s.key_prefix)
    for name in names:
        await store.add_user(name, "risk_officer", PASSWORD)
    token = await store.add_token("channel", "atm-switch", "atm")
    await client.aclose()
    return token


@pytest.fixture()
def worker(infra: Settings, tmp_path: Path) -> Iterator[WorkerProcess]:
    s = isolated(infra, auth_required=True)
    asyncio.run(_users(s, "mia", "noah"))
    with running_worker(s, tmp_path) as w:
        yield w


@pytest.fixture()
def unlimited(infra: Settings, tmp_path: Path) -> Iterator[tuple[WorkerProcess, str]]:
    """Failures not limited, so every attempt reaches the password check, as a flood from
    many addresses would."""
    s = isolated(infra, auth_required=True, login_failures_per_minute=100_000)
    token = asyncio.run(_users(s, "mia"))
    with running_worker(s, tmp_path) as w:
        yield w, token


async def _login(http: httpx.AsyncClient, user: str, password: str) -> httpx.Response:
    return await http.post("/v1/login", content=orjson.dumps({"user": user, "password": password}))


async def _flood(url: str, user: str, n: int) -> Counter[int]:
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(base_url=url, timeout=HANG_GUARD_S, limits=limits) as http:
        answers = await asyncio.gather(*(_login(http, user, f"wrong password {i}") for i in range(n)))
    return Counter(r.status_code for r in answers)


def test_concurrent_wrong_passwords_get_at_most_the_limit_of_checks(worker: WorkerProcess) -> None:
    codes = asyncio.run(_flood(worker.url, "mia", 40))
    assert codes[401] <= LIMIT, codes  # a 401 is a password actually checked
    assert codes[401] + codes[429] + codes[503] == 40, codes


def test_a_login_flood_does_not_stall_health_or_decisions(unlimited: tuple[WorkerProcess, str]) -> None:
    worker, token = unlimited
    pin = {"event_id": "pin-1", "customer_id": "F1", "channel": "atm", "type": "pin_failure",
           "ts": time.time(), "terminal_id": "T1"}  # fmt: skip

    async def meanwhile() -> tuple[list[httpx.Response], list[httpx.Response], Counter[int]]:
        flood = asyncio.create_task(_flood(worker.url, "mia", 300))
        health, decisions = [], []
        auth = {"Authorization": f"Bearer {token}"}
        # 5 s: a hang guard, generous next to the milliseconds these take on an idle worker
        async with httpx.AsyncClient(base_url=worker.url, timeout=5.0, headers=auth) as http:
            for i in range(6):
                await asyncio.sleep(0.5)  # while the flood is under way
                health.append(await http.get("/healthz"))
                decisions.append(
                    await http.post("/v1/decisions", content=orjson.dumps({**pin, "event_id": f"p{i}"}))
                )
        return health, decisions, await flood

    health, decisions, codes = asyncio.run(meanwhile())
    assert [h.status_code for h in health] == [200] * 6
    answers = [(d.status_code, d.json().get("degraded")) for d in decisions]
    assert answers == [(200, False)] * 6, answers
    assert codes[401] + codes[429] == 300 and codes[429] > 0, codes  # the excess is refused at once


def _from(worker: WorkerProcess, address: str) -> httpx.Client:
    """A client whose connections come from ``address`` (any 127.x.y.z is this machine)."""
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=worker.url, timeout=HANG_GUARD_S, transport=transport)


def test_an_attacker_is_delayed_ever_longer_and_the_user_still_logs_in_elsewhere(
    worker: WorkerProcess,
) -> None:
    def login(http: httpx.Client, password: str) -> httpx.Response:
        return http.post("/v1/login", content=orjson.dumps({"user": "noah", "password": password}))

    with _from(worker, "127.0.0.7") as attacker:
        answers = [login(attacker, f"guess {i}") for i in range(LIMIT + 3)]
        assert [a.status_code for a in answers] == [401] * LIMIT + [429] * 3
        waits = [int(a.headers["Retry-After"]) for a in answers[LIMIT:]]
        assert waits[0] >= 60 and waits[1] >= 2 * waits[0] - 1 and waits[2] >= 2 * waits[1] - 1, waits
        assert login(attacker, PASSWORD).status_code == 429  # not from this address, for now
    asyncio.run(_flood(worker.url, "noah", 40))  # and more, from another address
    with _from(worker, "127.0.0.9") as user:
        assert login(user, PASSWORD).status_code == 200  # the real user is not locked out


@pytest.fixture()
def proxied(infra: Settings, tmp_path: Path) -> Iterator[WorkerProcess]:
    """A worker behind a proxy on 127.0.0.1 (trusted); other 127.x addresses are not."""
    s = isolated(infra, auth_required=True, trusted_proxies=("127.0.0.1",))
    asyncio.run(_users(s, "noah"))
    with running_worker(s, tmp_path) as w:
        yield w


def test_behind_a_trusted_proxy_callers_are_told_apart_by_the_forwarded_address(
    proxied: WorkerProcess,
) -> None:
    def login(http: httpx.Client, password: str, forwarded: str) -> int:
        body = orjson.dumps({"user": "noah", "password": password})
        return http.post("/v1/login", content=body, headers={"X-Forwarded-For": forwarded}).status_code

    with _from(proxied, "127.0.0.1") as proxy:  # the proxy: it forwards the client's address
        codes = [login(proxy, f"guess {i}", "6.6.6.6, 203.0.113.5") for i in range(LIMIT + 1)]
        assert codes == [401] * LIMIT + [429]
        assert login(proxy, PASSWORD, "203.0.113.5, 198.51.100.7") == 200  # the user, elsewhere
    with _from(proxied, "127.0.0.7") as direct:  # not a proxy: what it forwards is not believed
        codes = [login(direct, f"guess {i}", f"198.51.100.{i}") for i in range(LIMIT + 1)]
        assert codes == [401] * LIMIT + [429]


def test_slow_login_bodies_do_not_hold_the_places_of_logins(worker: WorkerProcess) -> None:
    host, port = worker.url.removeprefix("http://").split(":")
    slow = []
    for _ in range(20):  # more than the logins a worker checks at once (8): each sends its headers only
        sock = socket.create_connection((host, int(port)), timeout=HANG_GUARD_S)
        sock.sendall(b"POST /v1/login HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        slow.append(sock)
    try:
        time.sleep(1.0)  # the worker has them all waiting for their bodies
        with httpx.Client(base_url=worker.url, timeout=HANG_GUARD_S) as http:
            body = orjson.dumps({"user": "mia", "password": PASSWORD})
            assert http.post("/v1/login", content=body).status_code == 200
    finally:
        for sock in slow:
            sock.close()


def test_made_up_user_names_keep_the_failure_counters_small(infra: Settings) -> None:
    s = isolated(infra)

    async def go() -> list[bytes]:
        client = connect(s)
        store = AuthStore(client, s.key_prefix)
        for i in range(3):
            with pytest.raises(AuthError):
                await store.login(f"{i}" + "x" * 50_000, "wrong password", "203.0.113.5")
        keys = [k async for k in client.scan_iter(match=f"{s.key_prefix}:*")]
        await client.aclose()
        return keys

    keys = asyncio.run(go())
    assert keys and max(len(k) for k in keys) < 200, sorted(len(k) for k in keys)
