"""Roles and authentication on a real worker: 401 without or with a wrong credential, 403
with the wrong role, channel tokens limited to their channel, console logins with a
rate limit, secrets stored only as hashes, and the audit trail naming the person."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from engine.ops.launcher import WorkerProcess, settings_env
from engine.settings import Settings
from engine.store.redisio import connect
from engine.store.users import AuthStore
from tests.helpers import isolated, running_worker, same_origin

pytestmark = pytest.mark.integration
PASSWORD = "correct horse battery"


async def _setup(s: Settings) -> dict[str, str]:
    client = connect(s)
    store = AuthStore(client, s.key_prefix)
    for name, role in (("vera", "viewer"), ("otto", "risk_officer"), ("ada", "risk_admin")):
        await store.add_user(name, role, PASSWORD)
    tokens = {"atm": await store.add_token("channel", "atm-switch", "atm"),
              "campaign": await store.add_token("campaign", "outbound-dialler"),
              "crm": await store.add_token("crm", "crm-system")}  # fmt: skip
    raw = await client.hgetall(f"{s.key_prefix}:auth:{{{s.key_prefix}:auth}}:tokens")
    assert tokens["atm"].split("_", 2)[2].encode() not in b"".join(raw.values())  # only the hash is kept
    await client.aclose()
    return tokens


@pytest.fixture(scope="module")
def secured(
    infra: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[WorkerProcess, dict[str, str]]]:
    s = isolated(infra, auth_required=True)
    tokens = asyncio.run(_setup(s))
    with running_worker(s, tmp_path_factory.mktemp("auth")) as w:
        yield w, tokens


def _event(event_id: str, channel: str = "atm", etype: str = "pin_failure") -> bytes:
    return orjson.dumps({"event_id": event_id, "customer_id": "A1", "channel": channel, "type": etype,
                         "ts": time.time(), "terminal_id": "T1"})  # fmt: skip


def _login(http: httpx.Client, user: str, password: str = PASSWORD) -> httpx.Response:
    return http.post("/v1/login", content=orjson.dumps({"user": user, "password": password}))


def test_every_endpoint_but_health_needs_a_credential(secured: tuple[WorkerProcess, dict[str, str]]) -> None:
    worker, _ = secured
    with httpx.Client(base_url=worker.url, timeout=5) as http:
        assert http.get("/healthz").status_code == 200 and http.get("/readyz").status_code == 200
        for method, path in (("POST", "/v1/decisions"), ("GET", "/v1/customers/A1"), ("GET", "/v1/alerts"),
                             ("GET", "/metrics"), ("PUT", "/v1/customers/A1/profile"),
                             ("POST", "/v1/alerts/x/ack")):  # fmt: skip
            r = http.request(method, path, content=b"{}")
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated", path
        bad = http.get("/v1/alerts", headers={"Authorization": "Bearer bk_nope_nope"})
        assert bad.status_code == 401


def test_faust_pages_are_not_served(secured: tuple[WorkerProcess, dict[str, str]]) -> None:
    """Issue 17, item 8: Faust's own pages answered without a credential; /router/topics/
    named every topic and this worker's URL. The worker serves Beacon's API only."""
    worker, _ = secured
    with httpx.Client(base_url=worker.url, timeout=5) as http:
        for path in ("/", "/router/", "/router/topics/", "/table/", "/stats/", "/graph/", "/performance/"):
            r = http.get(path)
            assert r.status_code == 404, (path, r.status_code, r.text[:200])
            assert b"topic" not in r.content and worker.url.encode() not in r.content, path


def test_a_channel_token_decides_for_its_channel_only(secured: tuple[WorkerProcess, dict[str, str]]) -> None:
    worker, tokens = secured
    auth = {"Authorization": f"Bearer {tokens['atm']}"}
    with httpx.Client(base_url=worker.url, timeout=5, headers=auth) as http:
        assert http.post("/v1/decisions", content=_event("a-1")).status_code == 200
        other = http.post("/v1/decisions", content=_event("a-2", channel="mobile", etype="login"))
        assert other.status_code == 403 and other.json()["error"]["code"] == "wrong_channel"
        # Profiles are the CRM's to write (issue 17, finding 2): not a channel's.
        assert http.put("/v1/customers/A1/profile", content=b'{"segment": "mass"}').status_code == 403
        assert http.get("/v1/alerts").status_code == 403  # a channel token cannot read alerts
        assert http.get("/v1/customers/A1").status_code == 403


def test_outbound_scoring_is_for_channels_and_campaigns(
    secured: tuple[WorkerProcess, dict[str, str]],
) -> None:
    worker, tokens = secured
    ask = {"customer_id": "A9", "channel": "atm", "offers": ["credit_card_gold"]}

    def score(http: httpx.Client, token: str | None = None, **kw: object) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return http.post("/v1/offers/score", content=orjson.dumps({**ask, **kw}), headers=headers)

    with httpx.Client(base_url=worker.url, timeout=5, headers=same_origin(worker.url)) as http:
        assert score(http).status_code == 401
        crm = {"Authorization": f"Bearer {tokens['crm']}"}
        assert (
            http.put("/v1/customers/A9/profile", content=b'{"segment": "mass"}', headers=crm).status_code
            == 200
        )
        assert score(http, tokens["atm"]).status_code == 200  # a channel scores for its own channel
        other = score(http, tokens["atm"], channel="call_centre")
        assert other.status_code == 403 and other.json()["error"]["code"] == "wrong_channel"
        assert score(http, tokens["campaign"], channel="call_centre").status_code == 200  # any channel
        campaign = {"Authorization": f"Bearer {tokens['campaign']}"}
        assert http.post("/v1/decisions", content=_event("a-c1"), headers=campaign).status_code == 403
        assert _login(http, "vera").status_code == 200
        refused = http.post("/v1/offers/score", content=orjson.dumps(ask))  # a viewer's session
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"


def test_people_work_alerts_by_role_and_the_trail_names_them(
    secured: tuple[WorkerProcess, dict[str, str]],
) -> None:
    worker, tokens = secured
    with httpx.Client(base_url=worker.url, timeout=5, headers=same_origin(worker.url)) as http:
        for i in range(3):
            http.post(
                "/v1/decisions",
                content=_event(f"w-{i}"),
                headers={"Authorization": f"Bearer {tokens['atm']}"},
            )
        assert _login(http, "vera").status_code == 200  # the session cookie is kept by the client
        deadline = time.monotonic() + 30
        alerts: list[dict[str, object]] = []
        while not alerts and time.monotonic() < deadline:
            alerts = http.get("/v1/alerts", params={"customer": "A1"}).json()["alerts"]
            time.sleep(0.3)
        aid = alerts[0]["alert_id"]
        assert http.post(f"/v1/alerts/{aid}/ack", json={}).status_code == 403  # a viewer reads only
        assert _login(http, "otto").status_code == 200
        assert http.post(f"/v1/alerts/{aid}/ack", json={"by": "someone else"}).status_code == 200
        snooze = http.post(f"/v1/alerts/{aid}/snooze", json={"minutes": 5, "note": "travel"})
        assert snooze.status_code == 403  # snoozes are for risk admins
        assert _login(http, "ada").status_code == 200
        assert http.post(f"/v1/alerts/{aid}/snooze", json={"minutes": 5, "note": "travel"}).status_code == 200
        trail = http.get(f"/v1/alerts/{aid}").json()["audit"]
        assert [(t["action"], t["who"]) for t in trail] == [
            ("raised", "beacon"),
            ("ack", "otto"),
            ("snooze", "ada"),
        ]


def test_login_is_rate_limited(secured: tuple[WorkerProcess, dict[str, str]]) -> None:
    worker, _ = secured
    with httpx.Client(base_url=worker.url, timeout=5) as http:
        codes = [_login(http, "vera", "wrong password!").status_code for _ in range(6)]
        assert codes[:5] == [401] * 5 and codes[5] == 429
        assert _login(http, "vera").status_code == 429  # even the right password, for a minute


def test_beacon_users_creates_logins_and_tokens(infra: Settings) -> None:
    s = isolated(infra, auth_required=True)
    env, root = settings_env(s), Path(__file__).parents[2]

    def run(*argv: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "engine.cli", "users", *argv], env=env, input=stdin,
                              capture_output=True, text=True, timeout=60, cwd=root)  # fmt: skip

    assert (
        run("add", "nina", "--role", "risk_officer", "--password-stdin", stdin=PASSWORD + "\n").returncode
        == 0
    )
    weak = run("add", "nino", "--role", "viewer", "--password-stdin", stdin="short\n")
    assert weak.returncode != 0 and "at least 12 characters" in weak.stderr
    token = run("token", "--channel", "mobile")
    assert token.returncode == 0 and token.stdout.startswith("bk_")
    assert "nina\trisk_officer" in run("list").stdout
