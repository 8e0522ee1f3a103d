"""Request limits of the HTTP API on a real worker: bodies over the limit are answered
413 before they are read, a credential over its rate 429 with Retry-After, and callers
whose credentials Redis must check are limited before Redis is asked (per client address,
and for the whole worker).

The rates are tiny (one token per 1,000 s) so the test never depends on how fast the
machine sends: a caller gets exactly its burst, then waits. The worker sits "behind" a
trusted proxy on 127.0.0.1, so each test names its own client address in X-Forwarded-For;
requests without one come from 127.0.0.1. The worker-wide budget of credential checks is
spent by the last test of the module."""

from __future__ import annotations

import asyncio
import re
import secrets
import socket
import time
from collections.abc import Iterator

import httpx
import orjson
import pytest

from engine.ops.launcher import WorkerProcess
from engine.settings import Settings
from engine.store.redisio import connect
from engine.store.users import AuthStore
from tests.helpers import isolated, running_worker

pytestmark = pytest.mark.integration
BURST = 20
UNAUTH_BURST = 10  # requests a client address may send that fail authentication or need Redis
LOOKUP_BURST = 40  # credential checks in Redis the worker makes for callers it does not know
PASSWORD = "correct horse battery"
HANG_GUARD_S = 30.0  # a socket read that would otherwise hang forever; not a latency bound


async def _tokens(s: Settings) -> dict[str, str]:
    client = connect(s)
    store = AuthStore(client, s.key_prefix)
    await store.add_user("olga", "risk_officer", PASSWORD)
    tokens = {
        name: await store.add_token("channel", name, channel)
        for name, channel in (("atm-busy", "atm"), ("atm-calm", "atm"), ("mobile-big", "mobile"))
    }
    tokens["viewer"] = await store.add_token("viewer", "grafana")
    tokens["crm"] = await store.add_token("crm", "crm-system")
    tokens["sre"] = await store.add_token("viewer", "sre")
    tokens["late"] = await store.add_token("viewer", "late")
    await client.aclose()
    return tokens


@pytest.fixture(scope="module")
def limited(
    infra: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[WorkerProcess, dict[str, str]]]:
    s = isolated(
        infra,
        auth_required=True,
        rate_limit_per_s=0.001,
        rate_limit_burst=BURST,
        trusted_proxies=("127.0.0.1",),
        unauthenticated_per_s=0.001,
        unauthenticated_burst=UNAUTH_BURST,
        unauthenticated_global_per_s=0.001,
        unauthenticated_global_burst=LOOKUP_BURST,
        # The tests count token checks as Redis HGET calls (_lookups); the rule watcher's
        # poll reads the shadow version with an HGET too, so it must not poll meanwhile.
        rules_poll_s=3600.0,
    )
    tokens = asyncio.run(_tokens(s))
    with running_worker(s, tmp_path_factory.mktemp("limits")) as w:
        yield w, tokens


def _client(worker: WorkerProcess, token: str, address: str = "") -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} | ({"X-Forwarded-For": address} if address else {})
    return httpx.Client(base_url=worker.url, timeout=10, headers=headers)


def _made_up() -> str:
    """A token of the right shape that Redis does not know: checking it costs one HGET."""
    return f"bk_{secrets.token_hex(4)}_{secrets.token_urlsafe(24)}"


def _lookups(s: Settings) -> int:
    """HGET calls Redis has served: a token check (token_principal) is one."""

    async def read() -> int:
        client = connect(s)
        try:
            stats = await client.info("commandstats")
        finally:
            await client.aclose()
        return int(stats.get("cmdstat_hget", {}).get("calls", 0))

    return asyncio.run(read())


def _event(event_id: str, channel: str = "atm", **extra: object) -> bytes:
    return orjson.dumps({"event_id": event_id, "customer_id": "L1", "channel": channel, "type": "balance_inquiry",
                         "ts": time.time(), **extra})  # fmt: skip


def _metric(worker: WorkerProcess, token: str, line: str) -> float:
    with _client(worker, token) as http:
        text = http.get("/metrics").text
    found = re.search("^" + re.escape(line) + r" (\S+)$", text, flags=re.M)
    return float(found.group(1)) if found else 0.0


def test_a_credential_gets_its_burst_then_429_with_retry_after(
    limited: tuple[WorkerProcess, dict[str, str]],
) -> None:
    worker, tokens = limited
    line = 'beacon_rate_limited_total{reason="credential"}'
    before = _metric(worker, tokens["viewer"], line)
    with _client(worker, tokens["atm-busy"]) as http:
        statuses = [http.post("/v1/decisions", content=_event(f"busy-{i}")).status_code for i in range(BURST)]
        assert statuses == [200] * BURST
        refused = http.post("/v1/decisions", content=_event("busy-over"))
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limited"
        assert int(refused.headers["Retry-After"]) >= 1
        # Every guarded endpoint draws on the same budget of the same credential.
        ask = {"customer_id": "L1", "channel": "atm", "offers": ["credit_card_gold"]}
        assert http.post("/v1/offers/score", json=ask).status_code == 429
    # Another credential of the same channel is not held back by it.
    with _client(worker, tokens["atm-calm"]) as http:
        assert http.post("/v1/decisions", content=_event("calm-1")).status_code == 200
    assert _metric(worker, tokens["viewer"], line) == before + 2
    # The refused event was not decided: it changed no state.
    with _client(worker, tokens["viewer"]) as http:
        view = http.get("/v1/customers/L1").json()
    decided = {i["event_id"] for i in view["recent_interactions"]}
    assert "busy-over" not in decided and "busy-0" in decided


def test_unauthenticated_callers_are_refused_then_held_to_their_address_budget(
    limited: tuple[WorkerProcess, dict[str, str]],
) -> None:
    worker, _ = limited
    before = _lookups(worker.settings)
    with httpx.Client(base_url=worker.url, timeout=10, headers={"X-Forwarded-For": "192.0.2.10"}) as http:
        codes = [
            http.post("/v1/decisions", content=_event(f"anon-{i}")).status_code for i in range(BURST + 5)
        ]
        # No credential costs no Redis call, and counts against the address's budget.
        assert codes == [401] * UNAUTH_BURST + [429] * (BURST + 5 - UNAUTH_BURST)
        assert http.get("/readyz").status_code == 200  # health is never limited
    assert _lookups(worker.settings) == before


def _padded(event_id: str, size: int) -> bytes:
    event = _event(event_id, channel="mobile", pad="")
    return event[:-2] + b"x" * (size - len(event)) + b'"}'


def test_events_over_the_size_limits_are_refused_and_counted(
    limited: tuple[WorkerProcess, dict[str, str]],
) -> None:
    worker, tokens = limited
    s = worker.settings
    line = 'beacon_dlq_total{path="http",reason="too_large"}'
    before = _metric(worker, tokens["viewer"], line)
    with _client(worker, tokens["mobile-big"]) as http:
        assert http.post("/v1/decisions", content=_padded("big-ok", s.max_event_bytes)).status_code == 200
        # Over the event contract's limit, but a body the API reads: 400, like any invalid event.
        r = http.post("/v1/decisions", content=_padded("big-1", s.max_event_bytes + 1))
        assert r.status_code == 400 and r.json()["error"]["code"] == "too_large", r.text
        # Over the body limit: 413, before it is read.
        r = http.post("/v1/decisions", content=_padded("big-2", s.http_max_body_bytes + 1))
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_large", r.text
    with _client(worker, tokens["crm"]) as http:  # profiles are the CRM's to write
        profile = orjson.dumps({"segment": "x" * s.max_event_bytes})
        r = http.put("/v1/customers/L2/profile", content=profile)
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
        r = http.put("/v1/customers/L2/profile", content=b"{" + b" " * s.http_max_body_bytes + b"}")
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
    assert _metric(worker, tokens["viewer"], line) == before + 2


def test_other_bodies_are_bounded_by_the_general_limit(limited: tuple[WorkerProcess, dict[str, str]]) -> None:
    worker, _ = limited
    huge = b'{"user": "olga", "password": "' + b"p" * worker.settings.http_max_body_bytes + b'"}'
    with httpx.Client(base_url=worker.url, timeout=10) as http:
        r = http.post("/v1/login", content=huge)
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
        r = http.post("/v1/login", content=orjson.dumps({"user": "olga", "password": PASSWORD}))
        assert r.status_code == 200
        session = r.json()["session"]
        r = http.post("/v1/alerts/nope/ack", content=huge, headers={"Authorization": f"Bearer {session}"})
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"


def _raw_request(worker: WorkerProcess, head: bytes, body_part: bytes) -> bytes:
    """Send a request head and only part of its body, then read the answer."""
    with socket.create_connection((worker.settings.http_host, worker.settings.http_port)) as sock:
        sock.settimeout(HANG_GUARD_S)
        sock.sendall(head + body_part)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer


def _head(worker: WorkerProcess, token: str, length_header: bytes) -> bytes:
    return (
        b"POST /v1/decisions HTTP/1.1\r\nHost: beacon\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {token}\r\n".encode()
        + length_header
        + b"\r\n"
    )


def test_a_declared_huge_body_is_refused_without_being_sent(
    limited: tuple[WorkerProcess, dict[str, str]],
) -> None:
    # 8 GiB announced, 100 bytes sent: the answer comes without waiting for the rest.
    worker, tokens = limited
    head = _head(worker, tokens["mobile-big"], b"Content-Length: 8589934592\r\n")
    answer = _raw_request(worker, head, b'{"event_id": "' + b"y" * 86)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert orjson.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "too_large"


def test_an_endless_chunked_body_is_refused_once_it_passes_the_limit(
    limited: tuple[WorkerProcess, dict[str, str]],
) -> None:
    # No length, and a body that never ends: the answer comes once the limit is passed.
    worker, tokens = limited
    head = _head(worker, tokens["mobile-big"], b"Transfer-Encoding: chunked\r\n")
    chunk = b"x" * 4096
    chunks = worker.settings.http_max_body_bytes // len(chunk) + 2  # past the limit, and no last chunk
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(chunks))
    answer = _raw_request(worker, head, body)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert orjson.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "too_large"


def test_made_up_tokens_from_one_address_are_held_to_its_budget_before_redis_is_asked(
    limited: tuple[WorkerProcess, dict[str, str]],
) -> None:
    """Issue 14, finding 8: each made-up credential cost a Redis lookup, none limited."""
    worker, tokens = limited
    line = 'beacon_rate_limited_total{reason="unauthenticated_address"}'
    metric_before = _metric(worker, tokens["sre"], line)  # (its first use checks "sre" in Redis)
    before = _lookups(worker.settings)
    flood, during = UNAUTH_BURST * 4, []
    with httpx.Client(base_url=worker.url, timeout=10) as http:
        statuses = []
        for i in range(flood):
            headers = {"Authorization": f"Bearer {_made_up()}", "X-Forwarded-For": "198.51.100.1"}
            refused = http.get("/v1/alerts", headers=headers)
            statuses.append(refused.status_code)
            if i == flood // 2:  # meanwhile, a valid token never seen before, from elsewhere
                with _client(worker, tokens["late"], "198.51.100.2") as other:
                    during.append(other.get("/v1/alerts").status_code)
                # and a credential this worker verified, from the flooding address itself
                with _client(worker, tokens["sre"], "198.51.100.1") as same:
                    during.append(same.get("/v1/alerts").status_code)
    assert statuses == [401] * UNAUTH_BURST + [429] * (flood - UNAUTH_BURST)
    assert refused.json()["error"]["code"] == "too_many_unauthenticated"
    assert int(refused.headers["Retry-After"]) >= 1
    assert during == [200, 200]
    assert _lookups(worker.settings) - before == UNAUTH_BURST + 1  # the flood's budget, and "late"
    assert _metric(worker, tokens["sre"], line) == metric_before + flood - UNAUTH_BURST


def test_a_refused_token_sent_again_is_refused_without_asking_redis(
    limited: tuple[WorkerProcess, dict[str, str]],
) -> None:
    worker, _ = limited
    before = _lookups(worker.settings)
    with _client(worker, _made_up(), "198.51.100.3") as http:
        assert {http.get("/v1/alerts").status_code for _ in range(UNAUTH_BURST)} == {401}
    assert _lookups(worker.settings) - before == 1


def test_the_worker_bounds_credential_checks_from_callers_rotating_addresses(
    limited: tuple[WorkerProcess, dict[str, str]],
) -> None:
    """Last in the module: it spends the worker's budget of credential checks."""
    worker, tokens = limited
    line = 'beacon_rate_limited_total{reason="unauthenticated_worker"}'
    metric_before = _metric(worker, tokens["sre"], line)  # (its first use checks "sre" in Redis)
    before = _lookups(worker.settings)
    answers = []
    for i in range(LOOKUP_BURST + 10):
        with _client(worker, _made_up(), f"203.0.113.{i}") as http:
            answers.append(http.get("/v1/alerts"))
    checked = _lookups(worker.settings) - before
    assert 0 < checked <= LOOKUP_BURST
    assert [a.status_code for a in answers] == [401] * checked + [429] * (LOOKUP_BURST + 10 - checked)
    assert answers[-1].json()["error"]["code"] == "too_many_unauthenticated"
    assert _metric(worker, tokens["sre"], line) == metric_before + LOOKUP_BURST + 10 - checked
    with _client(worker, tokens["sre"], "203.0.113.250") as http:  # verified: not held back
        assert http.get("/v1/alerts").status_code == 200
