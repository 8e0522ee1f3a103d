"""Live calls against a real worker, each answer validated against engine/contract/openapi.json
(issue 17, the contract): the status must be documented for that route and method, and the
body must match that status's schema (errors: ``{"error": {"code", "message", "field"}}``).

Data-driven: a merger adding a route or an answer adds one row to ``CALLS``; an answer whose
status the spec does not list fails ``test_live_answers_match_the_spec`` naming the route.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from engine.contract import OPENAPI
from engine.http.guard import SESSION_COOKIE
from engine.ops.launcher import WorkerProcess
from engine.settings import Settings
from engine.store.redisio import connect
from engine.store.users import AuthStore
from tests.helpers import isolated, running_worker

pytestmark = pytest.mark.integration
SPEC = orjson.loads(OPENAPI)
URI = "urn:beacon:openapi"
REGISTRY: Registry[Any] = Registry().with_resource(URI, DRAFT202012.create_resource(SPEC))


def _event(event_id: str) -> dict[str, object]:
    return {
        "event_id": event_id,
        "customer_id": "K1",
        "channel": "internet",
        "type": "login",
        "ts": time.time(),
    }


# (method, spec path, url, JSON body or raw bytes or None, expected status)
CALLS: list[tuple[str, str, str, object, int]] = [
    ("post", "/v1/decisions", "/v1/decisions", _event("k-1"), 200),
    ("post", "/v1/decisions", "/v1/decisions", {"event_id": ""}, 400),
    ("post", "/v1/decisions", "/v1/decisions", b"event_id=1", 415),
    ("get", "/v1/customers/{customer_id}", "/v1/customers/K1", None, 200),
    ("get", "/v1/alerts", "/v1/alerts", None, 200),
    ("get", "/v1/alerts", "/v1/alerts?severity=high&limit=5&status=open", None, 200),
    ("get", "/v1/alerts", "/v1/alerts?stauts=open", None, 400),
    ("get", "/v1/alerts", "/v1/alerts?limit=500", None, 400),
    ("post", "/v1/alerts/ack", "/v1/alerts/ack", {"alert_ids": ["nope"], "by": "ann"}, 200),
    ("post", "/v1/alerts/ack", "/v1/alerts/ack", {"alert_ids": []}, 400),
    ("get", "/v1/rules", "/v1/rules", None, 200),
    ("get", "/v1/alerts/{alert_id}", "/v1/alerts/nope", None, 404),
    ("post", "/v1/login", "/v1/login", {"user": 1}, 400),
    ("post", "/v1/logout", "/v1/logout", None, 200),
    ("get", "/healthz", "/healthz", None, 200),
    ("get", "/readyz", "/readyz", None, 200),
    ("get", "/openapi.json", "/openapi.json", None, 200),
    (
        "post",
        "/v1/decisions",
        "/v1/decisions",
        {**_event("k-cv"), "type": "conversion", "attributes": {"product": "credit_card_gold"}},
        200,
    ),
    ("post", "/v1/decisions", "/v1/decisions", {**_event("k-cv2"), "type": "conversion"}, 400),
    ("get", "/v1/reports/offers", "/v1/reports/offers", None, 200),
    ("get", "/v1/reports/offers", "/v1/reports/offers?since=soon", None, 400),
    ("get", "/v1/reports/backtest", "/v1/reports/backtest", None, 409),  # no shadow version runs
    ("get", "/v1/reports/backtest", "/v1/reports/backtest?since=soon", None, 400),
]


@pytest.fixture(scope="module")
def worker(infra: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    with running_worker(isolated(infra), tmp_path_factory.mktemp("contract")) as w:
        yield w


def _resolve(node: dict[str, Any], pointer: str) -> tuple[dict[str, Any], str]:
    """Follow ``$ref`` (local to the spec): the node and its JSON pointer."""
    while "$ref" in node:
        pointer = node["$ref"].removeprefix("#")
        node = REGISTRY.resolver(URI).lookup(URI + "#" + pointer).contents
    return node, pointer


def check_answer(method: str, path: str, status: int, content_type: str, body: bytes) -> None:
    """Raise if the spec does not document ``status`` for this operation or the body does not match."""
    responses = SPEC["paths"][path][method]["responses"]
    assert str(status) in responses, f"{method.upper()} {path}: status {status} not in openapi.json"
    where = f"/paths/{_escape(path)}/{method}/responses/{status}"
    response, where = _resolve(responses[str(status)], where)
    media = content_type.split(";")[0].strip()
    assert media in response.get("content", {}), f"{method.upper()} {path} {status}: {media} not documented"
    if media == "application/json":
        schema = {"$ref": f"{URI}#{where}/content/{_escape(media)}/schema"}
        Draft202012Validator(schema, registry=REGISTRY).validate(orjson.loads(body))


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


@pytest.mark.parametrize(
    ("method", "path", "url", "body", "status"), CALLS, ids=[f"{c[0]} {c[2]} {c[4]}" for c in CALLS]
)
def test_live_answers_match_the_spec(
    worker: WorkerProcess, method: str, path: str, url: str, body: object, status: int
) -> None:
    with httpx.Client(base_url=worker.url, timeout=10) as http:
        if isinstance(body, bytes):
            r = http.request(method, url, content=body, headers={"Content-Type": "text/plain"})
        elif body is None:
            r = http.request(method, url)
        else:
            r = http.request(method, url, json=body)
    assert r.status_code == status, r.text
    check_answer(method, path, r.status_code, r.headers.get("content-type", ""), r.content)


def test_the_served_document_is_the_checked_in_one(worker: WorkerProcess) -> None:
    with httpx.Client(base_url=worker.url, timeout=10) as http:
        r = http.get("/openapi.json")
    assert r.status_code == 200 and r.json() == SPEC


PASSWORD = "correct horse battery"
EVIL = "https://evil.example"
# With authentication on: (method, spec path, url, JSON body, extra headers, with the session cookie, status, code)
REFUSED: list[tuple[str, str, str, object, dict[str, str], bool, int, str]] = [
    ("get", "/v1/alerts", "/v1/alerts", None, {}, False, 401, "unauthenticated"),
    ("get", "/metrics", "/metrics", None, {}, False, 401, "unauthenticated"),
    (
        "post",
        "/v1/alerts/{alert_id}/{action}",
        "/v1/alerts/a1/ack",
        {},
        {"Origin": EVIL},
        True,
        403,
        "origin_refused",
    ),
    (
        "patch",
        "/v1/customers/{customer_id}/profile",
        "/v1/customers/K1/profile",
        {},
        {"Origin": EVIL},
        True,
        403,
        "origin_refused",
    ),
    ("post", "/v1/logout", "/v1/logout", None, {"Origin": EVIL}, True, 403, "origin_refused"),
    (
        "post",
        "/v1/login",
        "/v1/login",
        {"user": "olga", "password": "wrong"},
        {},
        False,
        401,
        "unauthenticated",
    ),
]


@pytest.fixture(scope="module")
def guarded(infra: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[WorkerProcess, str]]:
    s = isolated(infra, auth_required=True)

    async def users() -> None:
        client = connect(s)
        try:
            await AuthStore(client, s.key_prefix, s.session_ttl_s).add_user("olga", "risk_officer", PASSWORD)
        finally:
            await client.aclose()

    asyncio.run(users())
    with running_worker(s, tmp_path_factory.mktemp("contract-auth")) as w:
        with httpx.Client(base_url=w.url, timeout=10) as http:
            r = http.post("/v1/login", json={"user": "olga", "password": PASSWORD})
        assert r.status_code == 200, r.text
        check_answer("post", "/v1/login", 200, r.headers["content-type"], r.content)
        yield w, str(r.json()["session"])


@pytest.mark.parametrize(
    ("method", "path", "url", "body", "headers", "cookie", "status", "code"),
    REFUSED,
    ids=[f"{c[0]} {c[2]} {c[6]}" for c in REFUSED],
)
def test_refusals_match_the_spec(
    guarded: tuple[WorkerProcess, str],
    method: str,
    path: str,
    url: str,
    body: object,
    headers: dict[str, str],
    cookie: bool,
    status: int,
    code: str,
) -> None:
    worker, session = guarded
    cookies = {SESSION_COOKIE: session} if cookie else {}
    with httpx.Client(base_url=worker.url, timeout=10, cookies=cookies) as http:
        r = http.request(method, url, json=body, headers=headers)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
    check_answer(method, path, r.status_code, r.headers.get("content-type", ""), r.content)
