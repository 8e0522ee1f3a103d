"""Callers the worker cannot vouch for yet, limited before Redis is asked (issue 14, finding 8).

A credential the worker has not verified lately costs a Redis lookup to check, and a
made-up one is refused only after it. So, before the lookup, each client address takes a
token from its own bucket (``BEACON_UNAUTHENTICATED_PER_S``, burst
``BEACON_UNAUTHENTICATED_BURST``) and then one from the worker's bucket of lookups
(``BEACON_UNAUTHENTICATED_GLOBAL_*``): beyond either, 429 ``too_many_unauthenticated``
with ``Retry-After``, and Redis is not asked. A request refused without Redis (no
credential, or one Redis refused moments ago) takes a token from its address too, so an
address that only ever fails is slowed down as well; it costs the worker's lookups nothing.

The address buckets are bounded (least recently used out, see RateLimiter): a caller
rotating addresses gets a fresh bucket per address, and the worker's bucket still bounds
what all of them cost Redis. An IPv6 client usually holds a whole /64, so that is one caller.

>>> now = [0.0]
>>> gate = LookupGate(RateLimiter(1.0, 2, lambda: now[0]), RateLimiter(100.0, 100, lambda: now[0]))
>>> gate.lookup("192.0.2.1"), gate.missing("192.0.2.1")
(None, None)
>>> gate.lookup("192.0.2.1").status
429
>>> gate.lookup("192.0.2.2") is None  # another address has its own bucket
True
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable

from engine.http.api import Reply
from engine.http.ratelimit import RateLimiter, too_many
from engine.settings import Settings

CODE = "too_many_unauthenticated"
ADDRESSES = 10_000  # address buckets kept (about 250 bytes each)


def _uncounted(reason: str) -> None:
    return None


class LookupGate:
    """``counted`` is told the reason of each 429: ``unauthenticated_address`` or
    ``unauthenticated_worker`` (the web layer counts them in ``beacon_rate_limited_total``)."""

    def __init__(
        self,
        addresses: RateLimiter,
        worker: RateLimiter,
        counted: Callable[[str], None] = _uncounted,
    ) -> None:
        self.addresses, self.worker, self._counted = addresses, worker, counted

    @classmethod
    def from_settings(
        cls, s: Settings, counted: Callable[[str], None], clock: Callable[[], float] = time.monotonic
    ) -> LookupGate:
        per_address = RateLimiter(s.unauthenticated_per_s, s.unauthenticated_burst, clock, ADDRESSES)
        worker = RateLimiter(s.unauthenticated_global_per_s, s.unauthenticated_global_burst, clock)
        return cls(per_address, worker, counted)

    def missing(self, client: str) -> Reply | None:
        """A request refused without Redis: None, or 429 once its address is over."""
        return self._take(self.addresses, address_key(client), "unauthenticated_address", _ADDRESS)

    def lookup(self, client: str) -> Reply | None:
        """A credential Redis must check: None if it may, else 429 (Redis not asked)."""
        return self.missing(client) or self._take(self.worker, "worker", "unauthenticated_worker", _WORKER)

    def _take(self, limiter: RateLimiter, caller: str, reason: str, what: str) -> Reply | None:
        wait_s = limiter.take(caller)
        if wait_s == 0.0:
            return None
        self._counted(reason)
        return too_many(CODE, what, wait_s)


_ADDRESS = "too many requests from this address without a credential this worker knows"
_WORKER = "this worker is checking as many unknown credentials as it may"


def address_key(client: str) -> str:
    """The caller a client address stands for: itself, or for IPv6 its /64 network."""
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return client
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


class Refused:
    """Credentials Redis refused lately, by SHA-256 of the credential (no secret kept), each
    for ``ttl_s``; at most ``bound``, the oldest out first."""

    def __init__(self, ttl_s: float, clock: Callable[[], float], bound: int = 10_000) -> None:
        self.ttl_s, self._clock, self._bound = ttl_s, clock, bound
        self._until: OrderedDict[bytes, float] = OrderedDict()

    def recent(self, key: bytes) -> bool:
        until = self._until.get(key)
        if until is None:
            return False
        if self._clock() < until:
            return True
        del self._until[key]
        return False

    def add(self, key: bytes) -> None:
        if self.ttl_s <= 0:
            return
        self._until[key] = self._clock() + self.ttl_s
        self._until.move_to_end(key)
        while len(self._until) > self._bound:
            self._until.popitem(last=False)

    def forget(self, key: bytes) -> None:
        self._until.pop(key, None)

    def __len__(self) -> int:
        return len(self._until)
