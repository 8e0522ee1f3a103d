"""Request limits of the HTTP API on a real worker: bodies over the limit are answered
413 before they are read, and a credential over its rate 429 with Retry-After.

The rate is tiny (one token per 1,000 s) so the test never depends on how fast the
machine sends: a credential gets exactly its burst, then waits."""

from __future__ import annotations

import asyncio
import re
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
    await client.aclose()
    return tokens


@pytest.fixture(scope="module")
def limited(
    infra: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[WorkerProcess, dict[str, str]]]:
    s = isolated(infra, auth_required=True, rate_limit_per_s=0.001, rate_limit_burst=BURST)
    tokens = asyncio.run(_tokens(s))
    with running_worker(s, tmp_path_factory.mktemp("limits")) as w:
        yield w, tokens


def _client(worker: WorkerProcess, token: str) -> httpx.Client:
    return httpx.Client(base_url=worker.url, timeout=10, headers={"Authorization": f"Bearer {token}"})


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
    before = _metric(worker, tokens["viewer"], "beacon_rate_limited_total")
    with _client(worker, tokens["atm-busy"]) as http:
        statuses = [http.post("/v1/decisions", content=_event(f"busy-{i}")).status_code for i in range(BURST)]
        assert statuses == [200] * BURST
        refused = http.post("/v1/decisions", content=_event("busy-over"))
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limited"
        assert int(refused.headers["Retry-After"]) >= 1
        # Every guarded endpoint draws on the same budget of the same credential.
        assert http.put("/v1/customers/L1/profile", content=b'{"segment": "mass"}').status_code == 429
    # Another credential of the same channel is not held back by it.
    with _client(worker, tokens["atm-calm"]) as http:
        assert http.post("/v1/decisions", content=_event("calm-1")).status_code == 200
    assert _metric(worker, tokens["viewer"], "beacon_rate_limited_total") == before + 2
    # The refused event was not decided: it changed no state.
    with _client(worker, tokens["viewer"]) as http:
        view = http.get("/v1/customers/L1").json()
    decided = {i["event_id"] for i in view["recent_interactions"]}
    assert "busy-over" not in decided and "busy-0" in decided


def test_unauthenticated_callers_are_refused_before_the_limit(
    limited: tuple[WorkerProcess, dict[str, str]],
) -> None:
    worker, _ = limited
    with httpx.Client(base_url=worker.url, timeout=10) as http:
        codes = {
            http.post("/v1/decisions", content=_event(f"anon-{i}")).status_code for i in range(BURST + 5)
        }
        assert codes == {401}  # a made-up credential gets no budget of its own to spend
        assert http.get("/readyz").status_code == 200  # health is never limited


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
