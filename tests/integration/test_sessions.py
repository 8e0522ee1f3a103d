"""Sessions and tokens on a real worker and Redis (issue 17, finding 4): Secure cookies,
logout, sessions that follow the user (role change, password reset, removal, revoke),
an idle timeout, token expiry and revocation (``beacon users revoke``), and live streams
that end when their credential does.

The worker caches verified credentials for ``auth_cache_s`` (0.2 s here) and re-checks an
open stream every ``stream_recheck_s`` (0.3 s here): each test polls until the documented
bound has passed, with a generous deadline, rather than asserting on wall-clock times.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from engine.errors import ConfigError
from engine.ops.launcher import WorkerProcess, isolated, running_worker, settings_env
from engine.settings import Settings
from engine.store.redisio import connect
from engine.store.users import AuthError, AuthStore

pytestmark = pytest.mark.integration
PASSWORD = "correct horse battery"
IDLE_S = 3


def _run(s: Settings, coro_fn: Callable[[AuthStore], object]) -> object:
    async def go() -> object:
        client = connect(s)
        try:
            return await coro_fn(AuthStore(client, s.key_prefix, s.session_ttl_s))  # type: ignore[misc]
        finally:
            await client.aclose()

    return asyncio.run(go())


@pytest.fixture(scope="module")
def worker(infra: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    s = isolated(
        infra,
        auth_required=True,
        cookie_secure=True,
        auth_cache_s=0.2,
        auth_stale_s=0.2,
        auth_refused_cache_s=0.1,
        session_idle_s=IDLE_S,
        stream_recheck_s=0.3,
    )
    with running_worker(s, tmp_path_factory.mktemp("sessions")) as w:
        yield w


def _user(w: WorkerProcess, name: str, role: str = "risk_officer", password: str = PASSWORD) -> None:
    _run(w.settings, lambda store: store.add_user(name, role, password))


def _login(w: WorkerProcess, name: str) -> tuple[str, httpx.Response]:
    with httpx.Client(base_url=w.url, timeout=5) as http:
        r = http.post("/v1/login", content=orjson.dumps({"user": name, "password": PASSWORD}))
    assert r.status_code == 200, r.text
    return r.json()["session"], r


def _status(w: WorkerProcess, credential: str, path: str = "/v1/alerts") -> int:
    with httpx.Client(base_url=w.url, timeout=5) as http:
        return http.get(path, headers={"Authorization": f"Bearer {credential}"}).status_code


def _becomes(w: WorkerProcess, credential: str, status: int, within_s: float = 10.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if _status(w, credential) == status:
            return True
        time.sleep(0.1)
    return False


def _cli(s: Settings, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine.cli", "users", *argv], env=settings_env(s),
                          capture_output=True, text=True, timeout=60, cwd=Path(__file__).parents[2])  # fmt: skip


def test_the_session_cookie_is_secure_httponly_and_strict(worker: WorkerProcess) -> None:
    _user(worker, "cleo")
    _, r = _login(worker, "cleo")
    cookie = r.headers["set-cookie"].lower()
    assert "secure" in cookie and "httponly" in cookie and "samesite=strict" in cookie


def test_plain_http_cookies_only_on_a_loopback_bind(infra: Settings) -> None:
    infra.replace(cookie_secure=False, http_host="127.0.0.1").check()
    with pytest.raises(ConfigError, match="cookie_secure"):
        infra.replace(cookie_secure=False, http_host="0.0.0.0").check()


def test_logout_ends_the_session_and_clears_the_cookie(worker: WorkerProcess) -> None:
    _user(worker, "lou")
    session, _ = _login(worker, "lou")
    assert _status(worker, session) == 200
    with httpx.Client(base_url=worker.url, timeout=5) as http:
        out = http.post("/v1/logout", headers={"Authorization": f"Bearer {session}"})
    assert out.status_code == 200, out.text
    cleared = out.headers["set-cookie"].lower()
    assert "beacon_session=" in cleared and ("max-age=0" in cleared or "expires=" in cleared)
    assert _becomes(worker, session, 401)


def test_a_role_change_or_password_reset_ends_the_users_sessions(worker: WorkerProcess) -> None:
    _user(worker, "rita")
    session, _ = _login(worker, "rita")
    assert _status(worker, session) == 200
    _user(worker, "rita", role="viewer")  # `beacon users add` again: a new role
    assert _becomes(worker, session, 401)
    session, _ = _login(worker, "rita")
    assert _status(worker, session) == 200
    _user(worker, "rita", role="viewer", password=PASSWORD)  # a password reset (same text or not)
    assert _becomes(worker, session, 401)


def test_removing_a_user_or_revoking_their_sessions_ends_them(worker: WorkerProcess) -> None:
    _user(worker, "remy")
    session, _ = _login(worker, "remy")
    assert _status(worker, session) == 200
    done = _cli(worker.settings, "revoke", "--user", "remy")
    assert done.returncode == 0, done.stderr
    assert _becomes(worker, session, 401)
    session, _ = _login(worker, "remy")
    assert _cli(worker.settings, "remove", "remy").returncode == 0
    assert _becomes(worker, session, 401)
    assert "remy" not in _cli(worker.settings, "list").stdout


def test_an_idle_session_ends_and_use_keeps_it_alive(worker: WorkerProcess) -> None:
    _user(worker, "ida")
    session, _ = _login(worker, "ida")
    for _ in range(3):  # used every third of the idle timeout: alive past it
        assert _status(worker, session) == 200
        time.sleep(IDLE_S / 3)
    assert _status(worker, session) == 200
    time.sleep(IDLE_S + 1)  # idle for longer than the timeout
    assert _becomes(worker, session, 401, within_s=5)


def test_tokens_expire_and_their_lifetime_is_bounded(worker: WorkerProcess) -> None:
    token = _run(worker.settings, lambda store: store.add_token("viewer", "short-lived", expires_s=2))
    assert isinstance(token, str)
    assert _status(worker, token) == 200
    assert _becomes(worker, token, 401)
    with pytest.raises(AuthError, match="at most"):
        _run(worker.settings, lambda store: store.add_token("viewer", "forever", expires_s=10**9))


def test_a_token_is_revoked_by_id_and_listed(worker: WorkerProcess) -> None:
    made = _cli(worker.settings, "token", "--role", "viewer", "--name", "dashboards", "--expires-days", "30")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    token_id = token.split("_", 2)[1]
    assert _status(worker, token) == 200
    listed = _cli(worker.settings, "tokens").stdout
    line = next(x for x in listed.splitlines() if x.startswith(token_id))
    assert "dashboards" in line and "viewer" in line and "expires" in listed and "last used" in listed
    assert _cli(worker.settings, "revoke", token_id).returncode == 0
    assert _becomes(worker, token, 401)
    assert token_id not in _cli(worker.settings, "tokens").stdout
    assert _cli(worker.settings, "revoke", "nosuchid").returncode != 0


async def _stream_ends(w: WorkerProcess, credential: str, end: Callable[[], object]) -> None:
    headers = {"Authorization": f"Bearer {credential}"}
    async with (
        httpx.AsyncClient(base_url=w.url, timeout=httpx.Timeout(5, read=15)) as http,
        http.stream("GET", "/v1/alerts/stream", headers=headers) as response,
    ):
        assert response.status_code == 200
        lines = response.aiter_lines()
        assert (await anext(lines)).startswith(":")
        await asyncio.to_thread(end)

        async def drain() -> None:
            async for _ in lines:
                pass

        await asyncio.wait_for(drain(), 15)  # the worker closes it: not a read timeout


def test_an_open_stream_ends_when_its_session_or_token_does(worker: WorkerProcess) -> None:
    _user(worker, "sid")
    session, _ = _login(worker, "sid")

    def logout() -> None:
        with httpx.Client(base_url=worker.url, timeout=5) as http:
            http.post("/v1/logout", headers={"Authorization": f"Bearer {session}"})

    asyncio.run(_stream_ends(worker, session, logout))
    session, _ = _login(worker, "sid")
    asyncio.run(_stream_ends(worker, session, lambda: _user(worker, "sid", role="viewer")))
    token = _run(worker.settings, lambda store: store.add_token("viewer", "wallboard"))
    assert isinstance(token, str)
    token_id = token.split("_", 2)[1]
    asyncio.run(
        _stream_ends(worker, token, lambda: _run(worker.settings, lambda s: s.revoke_token(token_id)))
    )
