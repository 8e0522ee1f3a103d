"""Alert webhooks against a real HTTP receiver on a free local port: signed, retried after
a failure, given up (and counted) after the last retry."""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from engine.errors import ConfigError
from engine.http.webhooks import WebhookSender, parse_targets, signature
from engine.ops.infra import free_port

pytestmark = pytest.mark.integration

SECRET = "shared-secret-of-the-receiver"


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, list[Any], list[int]]]:
    got: list[Any] = []
    replies: list[int] = []  # statuses to answer, in order (then 200)

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        stamp = request.headers["X-Beacon-Timestamp"]
        ok = hmac.compare_digest(request.headers["X-Beacon-Signature"], signature(SECRET, stamp, body))
        got.append((request.path, orjson.loads(body), ok))
        return web.Response(status=replies.pop(0) if replies else 200)

    async with serving(hook) as base:
        yield base, got, replies


@contextlib.asynccontextmanager
async def serving(handler: Any) -> AsyncIterator[str]:
    """A receiver answering POST /<name> with ``handler`` on a free local port."""
    app = web.Application()
    app.router.add_post("/{name}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_signed_per_severity_and_retried(receiver: tuple[str, list[Any], list[int]]) -> None:
    base, got, replies = receiver
    targets = parse_targets((f"critical={base}/pager", f"*={base}/siem"), allow_http=True)
    replies.append(503)  # the first delivery fails once
    sender = WebhookSender(targets, SECRET, backoff=(0.05, 0.05))
    sender.notify("critical", {"alert_id": "a1"})
    sender.notify("low", {"alert_id": "a2"})
    await sender.drain()
    from collections import Counter as Tally

    seen = Tally((path, body["alert_id"]) for path, body, _ in got)
    # critical goes to the pager and to everything (*); low only to everything; the one
    # 503 (whichever request met it) was retried, so one delivery appears twice.
    assert set(seen) == {("/pager", "a1"), ("/siem", "a1"), ("/siem", "a2")} and sum(seen.values()) == 4
    assert all(ok for _, _, ok in got)


async def test_given_up_after_the_last_retry_and_counted(receiver: tuple[str, list[Any], list[int]]) -> None:
    base, got, replies = receiver
    replies.extend([500, 500, 500])
    failures = Counter("f", "f", ["severity"], registry=CollectorRegistry())
    sender = WebhookSender(
        parse_targets((f"high={base}/x",), allow_http=True), SECRET, failures, backoff=(0.01, 0.01)
    )
    sender.notify("high", {"alert_id": "a3"})
    await sender.drain()
    assert len(got) == 3 and failures.labels("high")._value.get() == 1


def test_bad_targets_are_refused() -> None:
    with pytest.raises(ConfigError, match="severity=url"):
        parse_targets(("urgent=http://x",))


async def test_a_slow_receiver_gets_a_bounded_number_of_requests_and_the_excess_is_counted() -> None:
    """Issue 14, finding 8: every alert started its own delivery task, however many were
    already waiting on a slow receiver."""
    import asyncio

    active, most = 0, 0
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        nonlocal active, most
        active += 1
        most = max(most, active)
        await release.wait()
        active -= 1
        return web.Response(status=200)

    failures = Counter("hook_failures", "x", ["severity"], registry=CollectorRegistry())
    async with serving(slow) as base:
        sender = WebhookSender(parse_targets((f"*={base}/siem",), allow_http=True), SECRET, failures,
                               backoff=(), max_concurrent=4, max_pending=10)  # fmt: skip
        for n in range(15):
            sender.notify("high", {"alert_id": f"a{n}"})
        await asyncio.sleep(0.5)
        assert most == 4  # in flight at once
        assert failures.labels("high")._value.get() == 5  # over the pending bound: counted, logged
        release.set()
        await sender.drain()


async def test_logs_name_the_host_only_never_the_url(
    receiver: tuple[str, list[Any], list[int]], caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 17, finding 5: a failing delivery logged the whole URL, so a token in its
    path or query (many receivers take one there) ended up in the logs."""
    base, got, replies = receiver
    replies.extend([500, 500])
    url = f"{base}/hook-tok3n?key=s3cr3t-in-query"
    sender = WebhookSender(parse_targets((f"high={url}",), allow_http=True), SECRET, backoff=(0.01,))
    with caplog.at_level("INFO", logger="beacon.webhooks"):
        sender.notify("high", {"alert_id": "a9"})
        await sender.drain()
    text = caplog.text
    assert len(got) == 2 and "127.0.0.1" in text
    assert "s3cr3t-in-query" not in text and "hook-tok3n" not in text


def test_plain_http_is_refused_unless_allowed_and_loopback() -> None:
    """Issue 17, finding 5: http:// receivers were accepted, so alerts crossed networks unencrypted."""
    with pytest.raises(ConfigError, match="use https://"):
        parse_targets(("*=http://siem.bank/in",))
    with pytest.raises(ConfigError, match="loopback host only"):
        parse_targets(("*=http://siem.bank/in",), allow_http=True)
    assert parse_targets(("*=http://127.0.0.1:9/in",), allow_http=True).urls_for("low")
    assert parse_targets(("*=https://siem.bank/in",)).urls_for("low") == ("https://siem.bank/in",)
