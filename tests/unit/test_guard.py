"""The credential check survives a Redis blip (issue 14): verified credentials are cached
for a short time, and while Redis fails a recently verified one is still accepted."""

from __future__ import annotations

import asyncio

import orjson

from engine.errors import StoreError
from engine.http.api import Reply
from engine.http.guard import Guard
from engine.store.users import Principal

ATM = Principal("atm-switch", "channel", "atm")
TOKEN, OTHER = "bk_a1_secret", "bk_b2_secret"


class Store:
    """Knows one token; ``down`` makes every lookup fail as Redis would."""

    def __init__(self) -> None:
        self.down = False
        self.calls = 0
        self.known: dict[str, Principal] = {TOKEN: ATM}

    async def token_principal(self, token: str) -> Principal | None:
        self.calls += 1
        if self.down:
            raise StoreError("auth store failed: Timeout reading from redis", "timeout")
        return self.known.get(token)

    async def session_principal(self, session: str) -> Principal | None:
        return await self.token_principal(session)

    async def login(self, name: str, password: str, remote: str) -> str:
        raise NotImplementedError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def check(guard: Guard, token: str) -> Principal | Reply:
    return asyncio.run(guard.check({"Authorization": f"Bearer {token}"}, {}, "decide"))


def status(result: Principal | Reply) -> int:
    return result.status if isinstance(result, Reply) else 200


def test_a_verified_token_survives_a_redis_blip_an_unknown_one_does_not() -> None:
    store, clock = Store(), Clock()
    guard = Guard(store, True, cache_s=30.0, stale_s=300.0, clock=clock)
    assert check(guard, TOKEN) == ATM
    store.down = True
    clock.now += 60  # past the fresh window: Redis is asked, fails, the verified one stands
    assert check(guard, TOKEN) == ATM
    unknown = check(guard, OTHER)
    assert status(unknown) == 503 and orjson.loads(unknown.body)["error"]["code"] == "state_unavailable"  # type: ignore[union-attr]
    clock.now += 300  # too long since Redis last vouched for it
    assert status(check(guard, TOKEN)) == 503


def test_within_the_fresh_window_redis_is_not_asked_and_after_it_a_removed_token_is_refused() -> None:
    store, clock = Store(), Clock()
    guard = Guard(store, True, cache_s=30.0, stale_s=300.0, clock=clock)
    assert check(guard, TOKEN) == ATM and check(guard, TOKEN) == ATM and store.calls == 1
    del store.known[TOKEN]  # revoked: takes effect once the fresh window is over
    clock.now += 31
    assert status(check(guard, TOKEN)) == 401
    store.down = True
    assert status(check(guard, TOKEN)) == 503  # a refused token is not cached as valid


def test_while_redis_fails_one_request_per_fresh_window_waits_on_it() -> None:
    store, clock = Store(), Clock()
    guard = Guard(store, True, cache_s=30.0, stale_s=300.0, clock=clock)
    check(guard, TOKEN)
    store.down, clock.now = True, clock.now + 31
    calls = store.calls
    assert [check(guard, TOKEN) for _ in range(5)] == [ATM] * 5
    assert store.calls == calls + 1
