"""Alert webhooks against real Redis (the outbox) and a real HTTP receiver on a free local
port: durable, signed per receiver with a delivery id, minimal bodies, dead-lettered after
the horizon (issue 17, finding 5)."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from engine.errors import ConfigError
from engine.http.webhooks import Receiver, WebhookSender, load_receivers, parse_receivers, signature
from engine.ops.infra import free_port
from engine.ops.launcher import settings_env
from engine.service.metrics import Metrics
from engine.settings import Settings
from engine.store.hookbox import HookBox
from engine.store.redisio import connect
from tests.helpers import isolated

pytestmark = pytest.mark.integration

SECRETS = {"pager": "secret-of-the-pager-0001", "siem": "secret-of-the-siem-00002"}
ALERT = {"event": "raised", "alert_id": "a1", "severity": "critical", "rule_id": "r7", "typologies": ["mule"],
         "customer_id": "C1", "amount": 9500.0, "context": {"city": "Oslo"}}  # fmt: skip


@pytest.fixture
async def settings(infra: Settings) -> Settings:
    return isolated(infra)


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Any]:
    client = connect(settings)
    yield client
    await client.aclose()


class Inbox:
    """What the receiver got: (receiver name, delivery id, body, signature valid)."""

    def __init__(self) -> None:
        self.got: list[tuple[str, str, dict[str, Any], bool]] = []
        self.replies: list[int] = []  # statuses to answer, in order (then 200)
        self.always: int | None = None

    async def hook(self, request: web.Request) -> web.Response:
        name, body = request.match_info["name"], await request.read()
        delivery, stamp = request.headers["Beacon-Delivery"], request.headers["Beacon-Timestamp"]
        expected = signature(SECRETS.get(name, "?"), delivery, stamp, body)
        ok = hmac.compare_digest(request.headers["Beacon-Signature"], expected)
        self.got.append((name, delivery, orjson.loads(body), ok))
        status = self.always or (self.replies.pop(0) if self.replies else 200)
        return web.Response(status=status)


@contextlib.asynccontextmanager
async def serving(handler: Any) -> AsyncIterator[str]:
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


@pytest.fixture
async def inbox() -> AsyncIterator[tuple[str, Inbox]]:
    box = Inbox()
    async with serving(box.hook) as base:
        yield base, box


def receivers(base: str, full_siem: bool = False) -> tuple[Receiver, ...]:
    return (Receiver("pager", f"{base}/pager", ("critical",), SECRETS["pager"]),
            Receiver("siem", f"{base}/siem", ("*",), SECRETS["siem"], full_siem))  # fmt: skip


def sender(redis: Any, settings: Settings, base: str, **kw: Any) -> WebhookSender:
    kw.setdefault("retry_s", 0.01)
    return WebhookSender(receivers(base, kw.pop("full_siem", False)), HookBox(redis, settings.key_prefix),
                         kw.pop("metrics", None), console_url="https://console.bank", poll_s=0.01, **kw)  # fmt: skip


async def until(check: Any, hooks: WebhookSender) -> None:
    for _ in range(2000):
        if check():
            return
        await hooks.run_once()
        await asyncio.sleep(0.005)
    raise AssertionError("not reached")


async def test_a_delivery_survives_the_worker_stopping_mid_retry(
    settings: Settings, redis: Any, inbox: tuple[str, Inbox]
) -> None:
    """Before: deliveries were in-memory tasks; a worker stopping mid-retry lost them."""
    base, box = inbox
    box.replies.append(503)
    first = sender(redis, settings, base)
    await first.notify("low", ALERT)  # siem only
    await first.run_once()  # the first attempt fails; then the worker stops
    assert [(n, ok) for n, _, _, ok in box.got] == [("siem", True)]
    del first
    other = connect(settings)  # another worker, its own connection
    try:
        later = sender(other, settings, base)
        await until(lambda: len(box.got) == 2, later)
        assert await later.box.pending() == 0
    finally:
        await other.aclose()
    (_, id1, body1, _), (_, id2, body2, ok2) = box.got
    assert id1 == id2 and body1 == body2 and ok2  # a retry keeps its delivery id


async def test_retried_past_six_tries_until_the_horizon_then_dead_lettered_and_counted(
    settings: Settings, redis: Any, inbox: tuple[str, Inbox]
) -> None:
    """Before: given up after 6 tries, whatever the horizon."""
    base, box = inbox
    box.always = 500
    metrics = Metrics(process=False)
    hooks = sender(redis, settings, base, metrics=metrics, retry_s=0.001, horizon_s=5.0)
    await hooks.notify("low", ALERT)
    await until(lambda: metrics.webhook_dead_letters.labels("siem")._value.get() == 1, hooks)
    assert len(box.got) > 6 and len({d for _, d, _, _ in box.got}) == 1
    assert metrics.webhook_retries.labels("siem")._value.get() == len(box.got) - 1
    dead = await hooks.box.dead()
    assert [(d["receiver"], d["reason"], d["attempts"]) for d in dead] == [("siem", "HTTP 500", len(box.got))]
    assert await hooks.box.pending() == 0


async def test_an_operator_lists_the_dead_and_redelivers_them(
    settings: Settings, redis: Any, inbox: tuple[str, Inbox]
) -> None:
    """Before: a dead delivery could only be read in Redis by hand, never sent again.
    ``beacon webhooks dead`` lists it, ``redeliver ID`` queues it once (twice is a no-op)
    with a fresh horizon, and the receiver gets the same delivery id and body."""
    base, box = inbox
    box.always = 500
    hooks = sender(redis, settings, base, retry_s=0.001, horizon_s=1.0)
    await hooks.notify("low", ALERT)
    for _ in range(1000):  # retried until the 1 s horizon, then dead
        if await hooks.box.dead():
            break
        await hooks.run_once()
        await asyncio.sleep(0.01)
    (dead,) = await hooks.box.dead()
    env = settings_env(settings)
    listed = await _beacon(env, "webhooks", "dead")
    assert f"{dead['id']}  siem" in listed and "HTTP 500  alert a1 (critical)" in listed, listed
    box.always, attempts = None, len(box.got)
    assert "queued again: 1" in await _beacon(env, "webhooks", "redeliver", dead["id"])
    assert "not on the dead list" in await _beacon(env, "webhooks", "redeliver", dead["id"], rc=1)
    assert await hooks.box.dead() == [] and await hooks.box.pending() == 1
    await until(lambda: len(box.got) == attempts + 1, hooks)
    assert box.got[-1][1] == dead["id"] and box.got[-1][2] == box.got[0][2] and box.got[-1][3]
    assert await hooks.box.pending() == 0


async def _beacon(env: dict[str, str], *argv: str, rc: int = 0) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "engine.cli", *argv, env=env, cwd=Path(__file__).parents[2],
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    assert proc.returncode == rc, out.decode()
    return out.decode()


async def test_an_alert_read_twice_is_queued_once(
    settings: Settings, redis: Any, inbox: tuple[str, Inbox]
) -> None:
    """The desk enqueues again when a worker stopped between raising an alert and
    acknowledging its record: the delivery id is the alert's, so it is not queued twice."""
    base, box = inbox
    hooks = sender(redis, settings, base)
    await hooks.notify("low", ALERT)
    await until(lambda: len(box.got) == 1, hooks)
    await hooks.notify("low", ALERT)  # after delivery, too
    assert await hooks.box.pending() == 0 and await hooks.run_once() == 0 and len(box.got) == 1


async def test_each_receiver_verifies_with_its_own_secret(
    settings: Settings, redis: Any, inbox: tuple[str, Inbox]
) -> None:
    """Before: one secret signed for every receiver, so any receiver could forge to the others."""
    base, box = inbox
    metrics = Metrics(process=False)
    hooks = sender(redis, settings, base, metrics=metrics)
    await hooks.notify("critical", ALERT)
    await until(lambda: len(box.got) == 2, hooks)
    assert sorted((n, ok) for n, _, _, ok in box.got) == [("pager", True), ("siem", True)]
    (_, delivery, body, _) = box.got[0]
    raw, stamp = orjson.dumps(body), "1700000000"
    assert signature(SECRETS["pager"], delivery, stamp, raw) != signature(
        SECRETS["siem"], delivery, stamp, raw
    )
    assert metrics.webhook_sent.labels("pager")._value.get() == 1
    assert box.got[0][1] != box.got[1][1]  # one delivery id per receiver


async def test_the_body_is_minimal_unless_the_receiver_opts_into_full_context(
    settings: Settings, redis: Any, inbox: tuple[str, Inbox]
) -> None:
    """Before: every receiver got the whole alert record, amounts and context included."""
    base, box = inbox
    hooks = sender(redis, settings, base, full_siem=True)
    await hooks.notify("critical", ALERT)
    await until(lambda: len(box.got) == 2, hooks)
    bodies = {n: body for n, _, body, _ in box.got}
    assert bodies["pager"] == {"event": "raised", "alert_id": "a1", "severity": "critical", "typologies": ["mule"],
                               "rule_ids": ["r7"], "status": "open", "customer_id": "C1",
                               "link": "https://console.bank/console#alert=a1"}  # fmt: skip
    assert bodies["siem"] == ALERT


async def test_two_workers_deliver_each_alert_once(
    settings: Settings, redis: Any, inbox: tuple[str, Inbox]
) -> None:
    base, box = inbox
    one, two = sender(redis, settings, base), sender(redis, settings, base)
    for n in range(20):
        await one.notify("low", {**ALERT, "alert_id": f"a{n}"})
    for _ in range(200):
        if len(box.got) >= 20:
            break
        await asyncio.gather(one.run_once(), two.run_once())
    assert sorted(body["alert_id"] for _, _, body, _ in box.got) == sorted(f"a{n}" for n in range(20))


async def test_logs_name_the_receiver_and_host_never_the_url(
    settings: Settings, redis: Any, inbox: tuple[str, Inbox], caplog: pytest.LogCaptureFixture
) -> None:
    base, box = inbox
    box.replies.append(500)
    url = f"{base}/siem?key=s3cr3t-in-query"
    hooks = WebhookSender((Receiver("siem", url, ("*",), SECRETS["siem"]),), HookBox(redis, settings.key_prefix),
                          retry_s=0.01)  # fmt: skip
    with caplog.at_level("INFO", logger="beacon.webhooks"):
        await hooks.notify("high", ALERT)
        await until(lambda: len(box.got) == 2, hooks)
    assert "127.0.0.1" in caplog.text and "s3cr3t-in-query" not in caplog.text


def test_receivers_file_plain_http_and_the_old_settings(tmp_path: Path) -> None:
    (tmp_path / "pager.secret").write_text(SECRETS["pager"] + "\n")
    (tmp_path / "hooks.toml").write_text(
        '[[receiver]]\nname = "pager"\nurl = "https://pager.bank/in"\nseverities = ["critical"]\n'
        'secret_file = "pager.secret"\n'
    )
    (pager,) = load_receivers(str(tmp_path / "hooks.toml"))
    assert pager == Receiver("pager", "https://pager.bank/in", ("critical",), SECRETS["pager"], False)
    entry = {"name": "x", "url": "http://siem.bank/in", "severities": ["*"], "secret_file": "pager.secret"}
    with pytest.raises(ConfigError, match="use https://"):
        parse_receivers({"receiver": [entry]}, tmp_path)
    with pytest.raises(ConfigError, match="loopback host only"):
        parse_receivers({"receiver": [entry]}, tmp_path, allow_http=True)
    local = parse_receivers(
        {"receiver": [{**entry, "url": "http://127.0.0.1:9/in"}]}, tmp_path, allow_http=True
    )
    assert local[0].url == "http://127.0.0.1:9/in"
    with pytest.raises(ConfigError, match="secret_file"):
        parse_receivers({"receiver": [{**entry, "url": "https://a/b", "secret_file": "missing"}]}, tmp_path)
    for old in ("BEACON_ALERT_WEBHOOKS", "BEACON_ALERT_WEBHOOK_SECRET"):
        with pytest.raises(ConfigError, match="BEACON_ALERT_WEBHOOK_RECEIVERS"):
            Settings.build(env={old: "x"})


def test_a_worker_delivers_a_raised_alert_through_the_outbox(infra: Settings, tmp_path: Path) -> None:
    """The desk's wiring end to end: a signed alert on risk.alerts, a real worker, a real receiver."""
    import http.server
    import threading
    import time

    from aiokafka import AIOKafkaProducer

    from engine.domain.recordsig import sign
    from tests.helpers import running_worker

    got: list[tuple[str, bytes, dict[str, str]]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.append((self.path, body, dict(self.headers)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    (tmp_path / "pager.secret").write_text(SECRETS["pager"])
    (tmp_path / "hooks.toml").write_text(
        f'[[receiver]]\nname = "pager"\nurl = "http://127.0.0.1:{server.server_port}/pager"\n'
        'severities = ["critical"]\nsecret_file = "pager.secret"\n'
    )
    s = isolated(infra).replace(record_signing_key="worker-secret", record_key_id="w1",
                                alert_webhook_receivers=str(tmp_path / "hooks.toml"),
                                alert_webhook_allow_http=True)  # fmt: skip
    value = orjson.dumps({**ALERT, "alert_id": "W1-a", "customer_id": "W1", "reason": "r", "action": "block",
                          "event_id": "W1-e", "decision_id": "d-W1", "channel": "atm", "ts": time.time()})  # fmt: skip

    async def publish() -> None:
        topic = s.topic("risk.alerts")
        producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap)
        await producer.start()
        try:
            header = sign(topic, b"W1", value, "w1", b"worker-secret")
            await producer.send_and_wait(topic, value, key=b"W1", headers=[header])
        finally:
            await producer.stop()

    try:
        with running_worker(s, tmp_path / "w"):
            asyncio.run(publish())
            for _ in range(600):
                if got:
                    break
                time.sleep(0.1)
    finally:
        server.shutdown()
    assert len(got) == 1, got
    path, body, headers = got[0]
    stamp, delivery = headers["Beacon-Timestamp"], headers["Beacon-Delivery"]
    assert headers["Beacon-Signature"] == signature(SECRETS["pager"], delivery, stamp, body)
    doc = orjson.loads(body)
    assert path == "/pager" and doc["customer_id"] == "W1" and "amount" not in doc
