"""The credential check survives a Redis blip (issue 14): verified credentials are cached
for a short time, and while Redis fails a recently verified one is still accepted. Callers
whose credentials Redis must check are limited before it is asked (issue 14, finding 8),
and a refused credential is remembered briefly. On an injected clock: no sleeping."""

from __future__ import annotations

import asyncio

import orjson

from engine.errors import StoreError
from engine.http.api import Reply
from engine.http.guard import ANONYMOUS, Guard
from engine.http.lookups import LookupGate, Refused, address_key
from engine.http.ratelimit import RateLimiter
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


def check(guard: Guard, token: str, client: str = "10.0.0.1") -> Principal | Reply:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return asyncio.run(guard.check(headers, {}, "decide", client))


def code(result: Principal | Reply) -> str:
    assert isinstance(result, Reply), result
    return str(orjson.loads(result.body)["error"]["code"])


def limited(
    per_address: int = 3, worker: int = 100, refused_s: float = 5.0
) -> tuple[Guard, Store, Clock, list[str]]:
    """A guard whose callers may have ``per_address`` credentials checked per address (and
    ``worker`` in all) at once, refilled at one per 1,000 s: no refill within a test."""
    store, clock, reasons = Store(), Clock(), []
    guard = Guard(store, True, cache_s=30.0, stale_s=300.0, clock=clock, refused_s=refused_s)
    gate = LookupGate(
        RateLimiter(0.001, per_address, clock), RateLimiter(0.001, worker, clock), reasons.append
    )
    guard.limit_unknown(gate)
    return guard, store, clock, reasons


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
    assert status(check(guard, TOKEN)) == 401  # refused lately: Redis is not asked again yet
    clock.now += 6
    assert status(check(guard, TOKEN)) == 503  # a refused token is not cached as valid


def test_while_redis_fails_one_request_per_fresh_window_waits_on_it() -> None:
    store, clock = Store(), Clock()
    guard = Guard(store, True, cache_s=30.0, stale_s=300.0, clock=clock)
    check(guard, TOKEN)
    store.down, clock.now = True, clock.now + 31
    calls = store.calls
    assert [check(guard, TOKEN) for _ in range(5)] == [ATM] * 5
    assert store.calls == calls + 1


def test_made_up_tokens_beyond_the_address_budget_get_429_without_a_redis_lookup() -> None:
    guard, store, _, reasons = limited(per_address=3)
    assert check(guard, TOKEN) == ATM  # verified before the flood: one lookup
    answers = [check(guard, f"bk_x{i}_made-up") for i in range(10)]
    assert [status(a) for a in answers] == [401, 401] + [429] * 8
    assert store.calls == 3  # the address's budget of 3, and no more
    assert code(answers[-1]) == "too_many_unauthenticated"
    assert answers[-1].headers["Retry-After"] == "1000"  # type: ignore[union-attr]
    assert reasons == ["unauthenticated_address"] * 8
    assert check(guard, TOKEN) == ATM  # a credential in the fresh cache is not held back
    assert status(check(guard, "bk_y_made-up", client="10.0.0.2")) == 401  # another address: its own budget
    assert store.calls == 4


def test_the_worker_budget_bounds_lookups_from_callers_rotating_addresses() -> None:
    guard, store, _, reasons = limited(per_address=3, worker=5)
    answers = [check(guard, f"bk_x{i}_made-up", client=f"10.0.1.{i}") for i in range(20)]
    assert [status(a) for a in answers] == [401] * 5 + [429] * 15
    assert store.calls == 5 and reasons == ["unauthenticated_worker"] * 15
    assert code(answers[-1]) == "too_many_unauthenticated"


def test_a_missing_credential_costs_no_lookup_and_counts_against_the_address() -> None:
    guard, store, _, reasons = limited(per_address=3)
    assert [status(check(guard, "")) for _ in range(5)] == [401, 401, 401, 429, 429]
    assert store.calls == 0 and reasons == ["unauthenticated_address"] * 2
    assert status(check(guard, "bk_x_made-up", client="10.0.0.1")) == 429  # the same budget
    assert store.calls == 0


def test_a_refused_credential_is_remembered_briefly_and_a_token_created_meanwhile_works_after() -> None:
    guard, store, clock, _ = limited(per_address=100, refused_s=5.0)
    assert [status(check(guard, OTHER)) for _ in range(4)] == [401] * 4
    assert store.calls == 1  # the repeats were refused without Redis
    store.known[OTHER] = ATM  # created in Redis meanwhile: refused for at most refused_s
    clock.now += 4.9
    assert status(check(guard, OTHER)) == 401 and store.calls == 1
    clock.now += 0.2
    assert check(guard, OTHER) == ATM and store.calls == 2


def test_a_credential_redis_vouched_for_lately_is_not_held_back_by_its_address() -> None:
    """Its checks are bounded already (one per cache_s): a flood from a shared address (a
    NAT, or a proxy not configured as trusted) must not lock out a channel at re-check."""
    guard, store, clock, _ = limited(per_address=3)
    assert check(guard, TOKEN) == ATM
    clock.now += 31  # no longer fresh: Redis is asked again
    assert {status(check(guard, f"bk_x{i}_made-up")) for i in range(10)} == {401, 429}
    calls = store.calls
    assert check(guard, TOKEN) == ATM and store.calls == calls + 1


def test_the_negative_cache_is_bounded_oldest_first() -> None:
    clock = Clock()
    refused = Refused(5.0, clock, bound=3)
    for key in (b"a", b"b", b"c", b"d"):
        refused.add(key)
    assert len(refused) == 3 and not refused.recent(b"a") and refused.recent(b"d")
    clock.now += 5.0
    assert not refused.recent(b"d") and len(refused) == 2  # an expired entry goes when seen


def test_the_address_buckets_are_bounded_however_many_addresses_a_caller_rotates() -> None:
    clock = Clock()
    gate = LookupGate(RateLimiter(0.001, 1, clock, max_callers=100), RateLimiter(0.0, 1, clock))
    for i in range(1000):
        gate.missing(f"10.{i // 256}.{i % 256}.1")
    assert len(gate.addresses) == 100


def test_an_ipv6_client_is_one_caller_per_64_network() -> None:
    assert address_key("2001:db8:1:2::1") == address_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("192.0.2.7") == "192.0.2.7" and address_key("unknown") == "unknown"


def test_without_auth_nothing_is_limited() -> None:
    guard, store, _, _ = limited(per_address=1)
    guard.required = False
    assert [check(guard, "") for _ in range(5)] == [ANONYMOUS] * 5 and store.calls == 0


def test_a_revoked_token_is_refused_once_the_cache_time_has_passed_and_a_logout_at_once() -> None:
    """The revocation bound (issue 17, finding 4): ``cache_s``; forget() (logout) at once."""
    store, clock = Store(), Clock()
    guard = Guard(store, True, cache_s=30.0, stale_s=300.0, clock=clock)
    assert check(guard, TOKEN) == ATM
    del store.known[TOKEN]  # revoked in Redis
    clock.now += 29.9
    assert check(guard, TOKEN) == ATM  # still within the cache time
    clock.now += 0.2
    assert code(check(guard, TOKEN)) == "unauthenticated"
    store.known[OTHER] = ATM
    assert check(guard, OTHER) == ATM
    del store.known[OTHER]
    guard.forget(OTHER)
    assert code(check(guard, OTHER)) == "unauthenticated"
