"""The check in front of every endpoint but health: credential -> principal -> permission.

401 when the credential is missing or wrong, 403 when it is right but the role may not
do this. With ``auth_required`` off (local development and the test suite's own
servers) every caller is an anonymous administrator.

The check survives a Redis blip: a credential Redis vouched for is taken from an
in-process cache for ``cache_s`` (``BEACON_AUTH_CACHE_S``) without asking again, and
while Redis fails it is still accepted up to ``stale_s`` (``BEACON_AUTH_STALE_S``) after
Redis last vouched for it; only one request per ``cache_s`` then waits on Redis. An
unknown credential is never accepted without Redis (503). Revocation: a token revoked or
expired, or a session ended (logout, idle or absolute timeout, its user replaced, removed
or revoked), is refused by a worker at most ``cache_s`` later, or ``stale_s`` later if
Redis is unavailable all that time; a logout is refused at once by the worker that
served it (:meth:`Guard.forget`). An open live stream checks again every
``stream_recheck_s`` through this cache (agents/web.py).

A refusal is remembered too, for ``refused_s`` (``BEACON_AUTH_REFUSED_CACHE_S``, 5 s), by
SHA-256 like a verification and bounded the same way: the same bad credential sent again
is refused without Redis. Creation: a credential refused by a worker is accepted by it at
most ``refused_s`` after Redis first knows it (in practice never matters: a new token or
session is random, so nobody sent it before it existed). A refusal is never cached as
valid, and a failing Redis refuses nothing (503, or the stale rule above).

Callers Redis must be asked about are limited before it is (``limit_unknown``,
engine/http/lookups.py): 429 ``too_many_unauthenticated`` per client address and for the
worker. A credential in the fresh cache is not limited, nor one Redis vouched for within
``stale_s`` (each costs one lookup per ``cache_s`` at most): a flood from a shared
address cannot lock out a channel when its credential is checked again.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping

from engine.errors import StoreError
from engine.http.api import Reply, error
from engine.http.lookups import LookupGate, Refused
from engine.http.ratelimit import RateLimiter
from engine.store.base import Credentials
from engine.store.users import Principal

ANONYMOUS = Principal("anonymous", "risk_admin")
SCRAPER = Principal("prometheus", "viewer")  # the settings' metrics_token: /metrics only
SESSION_COOKIE = "beacon_session"


class Guard:
    def __init__(
        self,
        store: Credentials,
        required: bool,
        metrics_token: str = "",
        cache_s: float = 30.0,
        stale_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        refused_s: float = 5.0,
    ) -> None:
        self.store = store
        self.required = required
        self._metrics_token = metrics_token.encode()
        self.verified = Verified(cache_s, stale_s, clock)
        self.refused = Refused(refused_s, clock)
        self.gate = LookupGate(RateLimiter(0.0, 1), RateLimiter(0.0, 1))  # no limit until told

    def limit_unknown(self, gate: LookupGate, refused_s: float | None = None) -> None:
        """Limit callers Redis must be asked about (and how long a refusal is remembered)."""
        self.gate = gate
        if refused_s is not None:
            self.refused.ttl_s = refused_s

    def forget(self, credential: str) -> None:
        """This worker stops trusting a credential at once (logout)."""
        self.verified.put(hashlib.sha256(credential.encode()).digest(), None)

    @staticmethod
    def bearer(headers: Mapping[str, str]) -> str:
        """The bearer token the request carries, or ""."""
        return _bearer(headers)

    @staticmethod
    def credential(headers: Mapping[str, str], cookies: Mapping[str, str]) -> str:
        return _bearer(headers) or cookies.get(SESSION_COOKIE, "")

    async def check(
        self, headers: Mapping[str, str], cookies: Mapping[str, str], permission: str, client: str = ""
    ) -> Principal | Reply:
        """``client``: the caller's address (engine/http/proxies.py), for the limits above."""
        if not self.required:
            return ANONYMOUS
        credential = _bearer(headers) or cookies.get(SESSION_COOKIE, "")
        if permission == "scrape":
            if self._metrics_token and hmac.compare_digest(credential.encode(), self._metrics_token):
                return SCRAPER
            permission = "read"  # a person with read access may look at /metrics too
        if not credential:
            return self.gate.missing(client) or error(
                401, "unauthenticated", "send Authorization: Bearer <token>, or log in", **_CHALLENGE
            )
        who = await self._principal(credential, client)
        if isinstance(who, Reply):
            return who
        if who is None:
            return error(401, "unauthenticated", "the token or session is not valid", **_CHALLENGE)
        if not who.may(permission):
            return error(403, "forbidden", f"role {who.role} may not {permission}")
        return who

    async def _principal(self, credential: str, client: str) -> Principal | Reply | None:
        key = hashlib.sha256(credential.encode()).digest()  # the cache holds no secret
        who = self.verified.fresh(key)
        if who is not None:
            return who
        if self.refused.recent(key):
            return self.gate.missing(client)  # None: refused again, without Redis
        if not self.verified.known(key):
            over = self.gate.lookup(client)
            if over is not None:
                return over
        try:
            if credential.startswith("bk_"):
                who = await self.store.token_principal(credential)
            else:
                who = await self.store.session_principal(credential)
        except StoreError as exc:
            stale = self.verified.stale(key)
            return stale if stale is not None else error(503, "state_unavailable", str(exc))
        self.verified.put(key, who)
        if who is None:
            self.refused.add(key)
        return who


class Verified:
    """Principals of credentials Redis vouched for, by SHA-256 of the credential; bounded
    (the least recently verified go first)."""

    def __init__(
        self, cache_s: float, stale_s: float, clock: Callable[[], float], bound: int = 10_000
    ) -> None:
        self.cache_s, self.stale_s, self._clock, self._bound = cache_s, max(stale_s, cache_s), clock, bound
        self._entries: OrderedDict[bytes, tuple[Principal, float, float]] = (
            OrderedDict()
        )  # who, vouched, fresh until

    def fresh(self, key: bytes) -> Principal | None:
        entry = self._entries.get(key)
        return entry[0] if entry is not None and self._clock() < entry[2] else None

    def known(self, key: bytes) -> bool:
        """Redis vouched for it within ``stale_s``: checking it again is bounded already."""
        entry = self._entries.get(key)
        return entry is not None and self._clock() < entry[1] + self.stale_s

    def stale(self, key: bytes) -> Principal | None:
        """Redis failed: a credential it vouched for within ``stale_s`` stands, and is
        fresh again for ``cache_s`` (so the next requests do not wait on Redis too)."""
        entry, now = self._entries.get(key), self._clock()
        if entry is None or now >= entry[1] + self.stale_s:
            self._entries.pop(key, None)
            return None
        self._entries[key] = (entry[0], entry[1], min(now + self.cache_s, entry[1] + self.stale_s))
        return entry[0]

    def put(self, key: bytes, who: Principal | None) -> None:
        if who is None:  # refused: forget it, and never cache a refusal as valid
            self._entries.pop(key, None)
            return
        now = self._clock()
        self._entries[key] = (who, now, now + self.cache_s)
        self._entries.move_to_end(key)
        while len(self._entries) > self._bound:
            self._entries.popitem(last=False)


_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def _bearer(headers: Mapping[str, str]) -> str:
    value = headers.get("Authorization") or headers.get("authorization") or ""
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""
