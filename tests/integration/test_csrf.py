"""CSRF and the console's headers on a real worker and Redis (issue 17, finding 9).

Before: a request carrying only the session cookie, with a ``text/plain`` body (what a
foreign page's form or no-CORS ``fetch`` can send) and a foreign ``Origin``, passed
authentication and reached the alert desk; ``/console`` came without a CSP, framing or
sniffing protection.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import orjson
import pytest

from engine.ops.launcher import WorkerProcess, isolated, running_worker
from engine.settings import Settings
from engine.store.redisio import connect
from engine.store.users import AuthStore

pytestmark = pytest.mark.integration
PASSWORD = "correct horse battery"
EVIL = "https://evil.example"
PARTNER = "https://console.bank.example"


@pytest.fixture(scope="module")
def worker(infra: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    s = isolated(infra, auth_required=True, allowed_origins=(PARTNER,))

    async def users() -> str:
        client = connect(s)
        try:
            store = AuthStore(client, s.key_prefix, s.session_ttl_s)
            await store.add_user("olga", "risk_officer", PASSWORD)
            return await store.add_token("channel", "atm", channel="atm")
        finally:
            await client.aclose()

    token = asyncio.run(users())
    with running_worker(s, tmp_path_factory.mktemp("csrf")) as w:
        w.token = token  # type: ignore[attr-defined]
        yield w


@pytest.fixture(scope="module")
def session(worker: WorkerProcess) -> str:
    with httpx.Client(base_url=worker.url, timeout=5) as http:
        r = http.post("/v1/login", json={"user": "olga", "password": PASSWORD})
    assert r.status_code == 200, r.text
    return str(r.json()["session"])


def _act(worker: WorkerProcess, session: str, headers: dict[str, str], body: bytes = b"{}") -> httpx.Response:
    """An officer's state change riding on the session cookie alone (no bearer token)."""
    with httpx.Client(base_url=worker.url, timeout=5) as http:
        return http.post(
            "/v1/alerts/no-such-alert/ack",
            content=body,
            headers={"Cookie": f"beacon_session={session}", **headers},
        )


def _code(r: httpx.Response) -> str:
    return str(r.json()["error"]["code"])


def test_a_cookie_only_text_plain_post_from_a_foreign_page_is_refused(
    worker: WorkerProcess, session: str
) -> None:
    # Before the fix this answered 404 not_found: authenticated, and the desk looked the alert up.
    r = _act(worker, session, {"Origin": EVIL, "Content-Type": "text/plain;charset=UTF-8"})
    assert (r.status_code, _code(r)) == (403, "origin_refused")
    r = _act(worker, session, {"Origin": EVIL, "Content-Type": "application/json"})
    assert (r.status_code, _code(r)) == (403, "origin_refused")
    r = _act(worker, session, {"Referer": EVIL + "/page", "Content-Type": "application/json"})
    assert (r.status_code, _code(r)) == (403, "origin_refused")
    r = _act(worker, session, {"Content-Type": "application/json"})  # no Origin, no Referer
    assert (r.status_code, _code(r)) == (403, "origin_refused")


def test_the_consoles_own_origin_and_allowed_origins_pass(worker: WorkerProcess, session: str) -> None:
    own = f"http://127.0.0.1:{worker.settings.http_port}"
    for origin in (own, PARTNER):
        r = _act(worker, session, {"Origin": origin, "Content-Type": "application/json"})
        assert (r.status_code, _code(r)) == (404, "not_found"), origin
    # Same origin, but a body that is not JSON: a form or a no-CORS fetch.
    r = _act(worker, session, {"Origin": own, "Content-Type": "text/plain"})
    assert (r.status_code, _code(r)) == (415, "unsupported_media_type")


def test_a_login_from_a_foreign_page_is_refused(worker: WorkerProcess) -> None:
    creds = orjson.dumps({"user": "olga", "password": PASSWORD})
    with httpx.Client(base_url=worker.url, timeout=5) as http:
        foreign = http.post("/v1/login", content=creds, headers={"Origin": EVIL})
        as_form = http.post("/v1/login", content=creds, headers={"Content-Type": "text/plain"})
        from_cli = http.post("/v1/login", content=creds)  # no Origin: a script, not a browser
    assert (foreign.status_code, _code(foreign)) == (403, "origin_refused")
    assert "set-cookie" not in foreign.headers
    assert (as_form.status_code, _code(as_form)) == (415, "unsupported_media_type")
    assert from_cli.status_code == 200


def test_every_cookie_state_change_is_origin_checked(worker: WorkerProcess, session: str) -> None:
    # PUT and PATCH (profiles) and the logout ride on the cookie too: a foreign page may not.
    cookie = {"Cookie": f"beacon_session={session}", "Origin": EVIL, "Content-Type": "application/json"}
    with httpx.Client(base_url=worker.url, timeout=5) as http:
        put = http.put("/v1/customers/X1/profile", content=b'{"segment": "mass"}', headers=cookie)
        patch = http.patch("/v1/customers/X1/profile", content=b'{"segment": "mass"}', headers=cookie)
        out = http.post("/v1/logout", headers=cookie)
        still = http.get("/v1/alerts", headers={"Cookie": f"beacon_session={session}"})
    for r in (put, patch, out):
        assert (r.status_code, _code(r)) == (403, "origin_refused"), r.request.method
    assert still.status_code == 200, still.text  # the forged logout ended nothing


def test_channels_are_not_origin_checked_but_must_send_json(worker: WorkerProcess) -> None:
    event = {"event_id": "csrf-1", "customer_id": "C1", "channel": "atm", "type": "balance_inquiry"}
    event["ts"] = time.time()
    auth = {"Authorization": f"Bearer {worker.token}"}  # type: ignore[attr-defined]
    with httpx.Client(base_url=worker.url, timeout=5, headers=auth) as http:
        ok = http.post("/v1/decisions", json=event, headers={"Origin": EVIL})
        bare = http.post("/v1/decisions", content=orjson.dumps({**event, "event_id": "csrf-2"}))
        form = http.post(
            "/v1/decisions",
            content=orjson.dumps({**event, "event_id": "csrf-3"}),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    assert ok.status_code == 200, ok.text
    assert bare.status_code == 200, bare.text  # no Content-Type at all: read as JSON
    assert (form.status_code, _code(form)) == (415, "unsupported_media_type")


def test_the_console_page_sends_a_content_security_policy(worker: WorkerProcess, session: str) -> None:
    with httpx.Client(base_url=worker.url, timeout=5) as http:
        page = http.get("/console")
        alerts = http.get("/v1/alerts", headers={"Authorization": f"Bearer {session}"})
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert "script-src 'sha256-" in policy and "unsafe-inline" not in policy
    assert page.headers["x-frame-options"] == "DENY"
    for r in (page, alerts):
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["cache-control"] == "no-store"
        assert r.headers["referrer-policy"] == "same-origin"
