"""Who the client is behind trusted proxies (``BEACON_TRUSTED_PROXIES``).

Behind a load balancer or reverse proxy every connection comes from the proxy, so the
client's address is in ``X-Forwarded-For``, which each proxy appends its peer to. The
header is believed only when the connection comes from a configured trusted proxy (an
address or CIDR network); then the client is the right-most address in it that is not
itself a trusted proxy (the left part is whatever the client sent, made up or not).
Otherwise the client is the connection's peer. Login limits, the anonymous caller's
rate limit and the limit of callers whose credential Redis must check
(engine/http/lookups.py) key on this address.

>>> proxies = parse_proxies(["10.0.0.0/8"])
>>> client_address("10.0.0.2", ["6.6.6.6, 198.51.100.7"], proxies)
'198.51.100.7'
>>> client_address("203.0.113.9", ["6.6.6.6"], proxies)
'203.0.113.9'
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from engine.errors import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
FORWARDED_FOR = "X-Forwarded-For"


def parse_proxies(entries: Iterable[str]) -> tuple[Network, ...]:
    """Addresses or CIDR networks, or ConfigError naming the one that is neither."""
    out = []
    for entry in entries:
        try:
            out.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError as exc:
            raise ConfigError(f"BEACON_TRUSTED_PROXIES: {entry!r} is not an address or network") from exc
    return tuple(out)


def client_address(peer: str | None, forwarded_for: Sequence[str], proxies: Sequence[Network]) -> str:
    """The client's address: ``peer``, or behind a trusted proxy the right-most address of
    the ``X-Forwarded-For`` values (in the order received) that is not a trusted proxy."""
    if not peer:
        return "unknown"
    if not _trusted(peer, proxies):
        return peer
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",") if hop.strip()]
    farthest = peer
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            break  # not written by a proxy we trust: stop at the last good one
        farthest = str(address)
        if not any(address in network for network in proxies):
            return farthest
    return farthest


def _trusted(address: str, proxies: Sequence[Network]) -> bool:
    parsed = _address(address)
    return parsed is not None and any(parsed in network for network in proxies)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None
