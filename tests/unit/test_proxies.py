"""The client address behind trusted proxies (BEACON_TRUSTED_PROXIES): X-Forwarded-For
is believed only when the peer is a trusted proxy, and then its right-most address that
is not itself one; otherwise the peer's address is the client's."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from engine.errors import ConfigError
from engine.http.proxies import client_address, parse_proxies

PROXIES = parse_proxies(["10.0.0.0/8", "192.168.1.5", "fd00::/8"])


def test_without_trusted_proxies_the_peer_is_the_client_whatever_the_header_says() -> None:
    assert client_address("203.0.113.9", ["1.2.3.4"], ()) == "203.0.113.9"
    assert client_address("203.0.113.9", ["1.2.3.4"], PROXIES) == "203.0.113.9"  # not a proxy: ignored
    assert client_address(None, [], PROXIES) == "unknown"


def test_behind_a_trusted_proxy_the_right_most_untrusted_address_is_the_client() -> None:
    assert client_address("10.1.2.3", ["198.51.100.7"], PROXIES) == "198.51.100.7"
    # a client's own made-up entries are on the left; proxies append on the right
    assert client_address("10.1.2.3", ["6.6.6.6, 198.51.100.7, 192.168.1.5"], PROXIES) == "198.51.100.7"
    assert client_address("10.1.2.3", ["6.6.6.6", "198.51.100.7, 10.9.9.9"], PROXIES) == "198.51.100.7"
    assert client_address("fd00::1", ["2001:db8::5"], PROXIES) == "2001:db8::5"


def test_a_proxy_without_a_usable_header_is_the_client() -> None:
    assert client_address("10.1.2.3", [], PROXIES) == "10.1.2.3"
    assert client_address("10.1.2.3", ["10.4.4.4"], PROXIES) == "10.4.4.4"  # only proxies: the farthest
    assert client_address("10.1.2.3", ["not-an-address"], PROXIES) == "10.1.2.3"


def test_settings_entries_must_be_addresses_or_networks() -> None:
    assert parse_proxies([]) == ()
    assert [str(p) for p in parse_proxies([" 127.0.0.1 ", "::1"])] == ["127.0.0.1/32", "::1/128"]
    with pytest.raises(ConfigError, match="BEACON_TRUSTED_PROXIES"):
        parse_proxies(["proxy.internal"])


def test_the_rate_limit_of_anonymous_callers_and_logins_use_it() -> None:
    from agents.web import _remote

    behind = SimpleNamespace(remote="10.1.2.3", headers={"X-Forwarded-For": "198.51.100.7"})
    assert _remote(behind, PROXIES) == "198.51.100.7"  # type: ignore[arg-type]
    assert _remote(behind) == "10.1.2.3"  # type: ignore[arg-type]


def test_a_worker_refuses_to_start_with_a_proxy_that_is_not_an_address() -> None:
    from engine.settings import Settings

    Settings(trusted_proxies=("10.0.0.0/8", "::1")).check()
    with pytest.raises(ConfigError, match="trusted_proxies"):
        Settings(trusted_proxies=("proxy.internal",)).check()
    for name in ("login_failures_per_minute", "login_concurrency", "login_hash_threads"):
        with pytest.raises(ConfigError, match=name):
            Settings(**{name: 0}).check()  # type: ignore[arg-type]
