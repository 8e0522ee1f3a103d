"""HTTP routes on the worker's web server (Faust views): routing only, see engine.http.api."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any, cast

import faust
import orjson
from faust.web import Request, Response, View

from engine.contract import OPENAPI
from engine.errors import StoreError
from engine.http.alerts import AlertApi
from engine.http.api import Api, Reply, error
from engine.http.backtests import backtest_reply
from engine.http.browser import (
    API_HEADERS,
    NO_ORIGIN,
    foreign_origin,
    not_json,
    origin_refused,
    page_headers,
    unsupported,
)
from engine.http.guard import ANONYMOUS, SESSION_COOKIE, Guard
from engine.http.logins import LoginGate, login
from engine.http.lookups import LookupGate
from engine.http.proxies import FORWARDED_FOR, Network, client_address, parse_proxies
from engine.http.ratelimit import RateLimiter, too_many
from engine.http.reports import offer_report_reply
from engine.http.streamslots import StreamSlots
from engine.service.auditlog import read_audit
from engine.service.metrics import Metrics
from engine.store.base import AlertInbox
from engine.store.users import AuthStore, Principal

_SSE_HEARTBEAT_S = 15.0
_STREAMS_FULL = "too many live alert streams open (per user or token, or on this worker): close one"
_CONSOLE = resources.files("engine.http").joinpath("console", "console.html").read_bytes()
_CONSOLE_HEADERS = page_headers(_CONSOLE)
_ANALYST = resources.files("engine.http").joinpath("console", "analyst.html").read_bytes()
_ANALYST_HEADERS = page_headers(_ANALYST)


def _flag(request: Request, name: str) -> bool:
    return request.query.get(name, "").lower() in ("1", "true", "yes")


def _respond(view: View, reply: Reply, extra: dict[str, str] | None = None) -> Response:
    """``extra``: API_HEADERS on answers a browser may show (not on the channels' decisions)."""
    headers = reply.headers if extra is None else {**extra, **reply.headers}
    return view.bytes(reply.body, content_type=reply.content_type, status=reply.status, headers=headers)


def _browser(view: View, reply: Reply) -> Response:
    return _respond(view, reply, API_HEADERS)


def register_views(app: faust.App, api: Api, alerts: AlertApi, guard: Guard, auth: AuthStore) -> None:
    settings = api.service.settings
    limiter = RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
    worker_limit = RateLimiter(settings.rate_limit_global_per_s, settings.rate_limit_global_burst)
    slots = StreamSlots(settings.alert_streams_per_principal, settings.alert_streams_max)
    body_limit = settings.http_max_body_bytes
    logins = LoginGate(settings.login_concurrency)
    proxies = parse_proxies(settings.trusted_proxies)
    counted = api.metrics.rate_limited.labels
    gate = LookupGate.from_settings(settings, lambda reason: counted(reason).inc())
    guard.limit_unknown(gate, settings.auth_refused_cache_s)  # agents/app.py builds the guard

    async def allow(request: Request, permission: str) -> Principal | Reply:
        client = _remote(request, proxies)
        who = await guard.check(request.headers, request.cookies, permission, client)
        if isinstance(who, Reply):
            return who
        over = throttle(limiter, api.metrics, who, request, proxies, client)
        return over or shed(worker_limit, api.metrics) or who

    async def allow_with_body(request: Request, permission: str) -> tuple[Principal, bytes] | Reply:
        """The caller and the request body: or the 401/403/429, 403 ``origin_refused`` for
        a cookie from a foreign page, 413 for a body too large, 415 for one that is not JSON."""
        refused = cross_site(request)
        if refused is not None:
            return refused
        who = await allow(request, permission)
        if isinstance(who, Reply):
            return who
        body = await read_body(request, body_limit)
        if isinstance(body, Reply):
            return body
        media = not_json(request.headers, body)
        if media is None:
            return (who, body)
        api.metrics.browser_refused.labels("unsupported_media_type").inc()
        return unsupported(media)

    def cross_site(request: Request, login: bool = False) -> Reply | None:
        """403 when a state change rides on the session cookie (no bearer token) from a
        page that is not ours; a login is checked only when the browser names an origin
        (a script or the CLI logs in without one). See engine/http/browser.py."""
        if not settings.auth_required or Guard.bearer(request.headers):
            return None
        if not login and SESSION_COOKIE not in request.cookies:
            return None  # no credential at all: the guard answers 401
        origin = foreign_origin(request.headers, settings.allowed_origins)
        if origin is None or (login and origin == NO_ORIGIN):
            return None
        api.metrics.browser_refused.labels("origin_refused").inc()
        return origin_refused(origin)

    @app.page("/v1/decisions")
    class Decisions(View):
        async def post(self, request: Request) -> Response:
            got = await allow_with_body(request, "decide")
            if isinstance(got, Reply):
                if got.status == 413:
                    api.metrics.rejected("http", "too_large")
                return _respond(self, got)
            who, body = got
            explain = _flag(request, "explain")
            scores = _flag(request, "scores")
            return _respond(
                self, await api.post_decision(body, explain=explain, channel=who.channel, scores=scores)
            )

    @app.page("/v1/offers/score")
    class OfferScores(View):
        async def post(self, request: Request) -> Response:
            got = await allow_with_body(request, "score")
            if isinstance(got, Reply):
                return _respond(self, got)
            who, body = got
            return _respond(self, await api.score_offers(body, channel=who.channel))

    @app.page("/v1/customers/{customer_id}")
    class Customer(View):
        async def get(self, request: Request, customer_id: str) -> Response:
            who = await allow(request, "read")
            if isinstance(who, Reply):
                return _respond(self, who)
            return _browser(self, await api.get_customer(customer_id))

    @app.page("/v1/customers/{customer_id}/profile")
    class Profile(View):
        async def put(self, request: Request, customer_id: str) -> Response:
            return _browser(self, await write_profile(request, customer_id, merge=False))

        async def patch(self, request: Request, customer_id: str) -> Response:
            return _browser(self, await write_profile(request, customer_id, merge=True))

    async def write_profile(request: Request, customer_id: str, merge: bool) -> Reply:
        got = await allow_with_body(request, "profile")
        if isinstance(got, Reply):
            return got
        who, body = got
        return await api.put_profile(customer_id, body, by=who.name, merge=merge)

    @app.page("/v1/customers/{customer_id}/profile/history")
    class ProfileHistory(View):
        async def get(self, request: Request, customer_id: str) -> Response:
            who = await allow(request, "profile_history")
            if isinstance(who, Reply):
                return _respond(self, who)
            return _browser(self, await api.profile_history(customer_id, request.query.get("limit")))

    @app.page("/v1/rules")
    class Rules(View):
        async def get(self, request: Request) -> Response:
            who = await allow(request, "read")
            return _respond(self, who) if isinstance(who, Reply) else _browser(self, await api.rules())

    @app.page("/v1/alerts")
    class Alerts(View):
        async def get(self, request: Request) -> Response:
            who = await allow(request, "read")
            if isinstance(who, Reply):
                return _respond(self, who)
            actor = None if who is ANONYMOUS else who.name
            return _browser(self, await alerts.find(dict(request.query), actor))

    @app.page("/v1/alerts/ack")
    class AlertsAck(View):
        async def post(self, request: Request) -> Response:
            got = await allow_with_body(request, "work")
            if isinstance(got, Reply):
                return _respond(self, got)
            who, body = got
            return _browser(self, await alerts.ack_many(body, None if who is ANONYMOUS else who.name))

    @app.page("/v1/alerts/stream")
    class AlertStream(View):
        async def get(self, request: Request) -> Response:
            who = await allow(request, "read")
            if isinstance(who, Reply):
                return _respond(self, who)
            if not slots.take(who.name):
                busy = error(429, "too_many_streams", _STREAMS_FULL, **{"Retry-After": "30"})
                return _respond(self, busy)
            client = _remote(request, proxies)

            async def still_allowed() -> bool:  # through the guard's cache: see stream_changes
                return isinstance(
                    await guard.check(request.headers, request.cookies, "read", client), Principal
                )

            try:
                return cast(
                    Response,
                    await stream_changes(
                        cast(Any, request), alerts.desk, still_allowed, settings.stream_recheck_s
                    ),
                )
            finally:
                slots.give_back(who.name)

    @app.page("/v1/alerts/{alert_id}")
    class AlertDetail(View):
        async def get(self, request: Request, alert_id: str) -> Response:
            who = await allow(request, "read")
            if isinstance(who, Reply):
                return _respond(self, who)
            return _browser(self, await alerts.detail(alert_id))

    @app.page("/v1/alerts/{alert_id}/{action}")
    class AlertAction(View):
        async def post(self, request: Request, alert_id: str, action: str) -> Response:
            got = await allow_with_body(request, "admin" if action == "snooze" else "work")
            if isinstance(got, Reply):
                return _respond(self, got)
            who, body = got
            actor = None if who is ANONYMOUS else who.name
            return _browser(self, await alerts.act(alert_id, action, body, actor))

    @app.page("/v1/login")
    class Login(View):
        async def post(self, request: Request) -> Response:
            refused = cross_site(request, login=True)
            if refused is not None:
                return _browser(self, refused)
            body = await read_body(request, body_limit)  # before a place: a slow body holds none
            if isinstance(body, Reply):
                return _respond(self, body)
            media = not_json(request.headers, body)
            if media is not None:
                api.metrics.browser_refused.labels("unsupported_media_type").inc()
                return _browser(self, unsupported(media))
            if not logins.enter():
                return _respond(self, logins.busy())
            try:
                reply = await login(auth, body, _remote(request, proxies))
            finally:
                logins.leave()
            response = _browser(self, reply)
            if reply.status == 200:
                token = orjson.loads(reply.body)["session"]
                cast(Any, response).set_cookie(  # an aiohttp response underneath
                    SESSION_COOKIE,
                    token,
                    httponly=True,
                    samesite="Strict",
                    secure=settings.cookie_secure,
                    max_age=auth.session_ttl_s,
                )
            return response

    @app.page("/v1/logout")
    class Logout(View):
        async def post(self, request: Request) -> Response:
            """Ends the session (cookie or bearer) in Redis and clears the cookie; 200
            whether or not it was still valid. A token is not ended here: revoke it."""
            refused = cross_site(request)
            if refused is not None:
                return _browser(self, refused)
            credential = Guard.credential(request.headers, request.cookies)
            if credential and not credential.startswith("bk_"):
                try:
                    await auth.logout(credential)
                except StoreError as exc:
                    return _respond(self, error(503, "state_unavailable", str(exc)))
                guard.forget(credential)
            response = _browser(self, Reply(200, b'{"logged_out": true}'))
            cast(Any, response).del_cookie(SESSION_COOKIE)
            return response

    @app.page("/console")
    class Console(View):
        async def get(self, request: Request) -> Response:
            # The page itself holds no data: it logs in, then every call it makes is checked.
            return _respond(self, Reply(200, _CONSOLE, dict(_CONSOLE_HEADERS), content_type="text/html"))

    @app.page("/console/analyst")
    class AnalystConsole(View):
        async def get(self, request: Request) -> Response:
            # The analysts' page (issue 18): offer reports, backtests. No data: each call it makes is checked.
            return _respond(self, Reply(200, _ANALYST, dict(_ANALYST_HEADERS), content_type="text/html"))

    @app.page("/v1/reports/offers")
    class OfferReport(View):
        async def get(self, request: Request) -> Response:
            who = await allow(request, "report")
            if isinstance(who, Reply):
                return _respond(self, who)
            offers = api.service.rules.offers if api.service.rules is not None else ()
            return _browser(self, await offer_report_reply(dict(request.query), settings, read_audit, offers))

    @app.page("/v1/reports/backtest")
    class BacktestReport(View):
        async def get(self, request: Request) -> Response:
            who = await allow(request, "report")
            if isinstance(who, Reply):
                return _respond(self, who)
            # The shadow version this worker runs (engine/service/rulewatch.py), read once.
            shadow = api.service.shadow_rules
            return _browser(self, await backtest_reply(dict(request.query), settings, shadow))

    @app.page("/openapi.json")
    class OpenApi(View):
        async def get(self, request: Request) -> Response:
            # Public like /healthz: it describes the routes, holds no data or secrets.
            return _respond(self, Reply(200, OPENAPI), API_HEADERS)

    @app.page("/healthz")
    class Health(View):
        async def get(self, request: Request) -> Response:
            return _respond(self, api.healthz())

    @app.page("/readyz")
    class Ready(View):
        async def get(self, request: Request) -> Response:
            return _respond(self, api.readyz())

    @app.page("/metrics")
    class MetricsPage(View):
        async def get(self, request: Request) -> Response:
            who = await allow(request, "scrape")
            if isinstance(who, Reply):
                return _respond(self, who)
            return _respond(self, api.metrics_page())


async def read_body(request: Request, limit: int) -> bytes | Reply:
    """The request body if it is at most ``limit`` bytes, else 413 ``too_large``, having
    read no more than ``limit + 1`` bytes of it. Faust's ``read_request_content`` reads a
    body whole, however large, so a client could fill the worker's memory.

    A declared Content-Length over the limit is refused unread; a body without one
    (chunked) is read until it passes the limit. aiohttp stops reading from the socket
    while its buffer is full, so an unread body waits in the kernel, not in memory.
    """
    aio = cast(Any, request)  # an aiohttp request underneath
    declared = aio.content_length
    if declared is not None and declared > limit:
        return _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while chunk := await aio.content.read(limit + 1 - size):
        size += len(chunk)
        if size > limit:
            return _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> Reply:
    return error(413, "too_large", f"the request body is larger than {limit} bytes")


def throttle(
    limiter: RateLimiter,
    metrics: Metrics,
    who: Principal,
    request: Request,
    proxies: tuple[Network, ...] = (),
    client: str = "",
) -> Reply | None:
    """429 ``rate_limited`` when this caller has used up its requests, else None.

    The caller is the authenticated principal: the tokens of one name (a channel's are
    named after it) share one budget, as do a person's sessions, and a made-up
    credential (refused with 401 before this) cannot open a fresh one. Without
    authentication (``auth_required`` off) every caller is the same anonymous principal,
    so the client address stands in for it (behind a trusted proxy, from X-Forwarded-For).
    """
    caller = f"addr:{client or _remote(request, proxies)}" if who is ANONYMOUS else f"user:{who.name}"
    what = "too many requests for this credential"
    return _refuse_if_over(limiter, caller, metrics, "rate_limited", what, "credential")


def shed(worker_limit: RateLimiter, metrics: Metrics) -> Reply | None:
    """429 ``overloaded`` when the worker as a whole is over its rate (every caller within
    its own): shed early rather than let the queue and everyone's latency grow."""
    what = "this worker is at its rate"
    return _refuse_if_over(worker_limit, "worker", metrics, "overloaded", what, "worker")


def _refuse_if_over(
    limiter: RateLimiter, caller: str, metrics: Metrics, code: str, what: str, reason: str
) -> Reply | None:
    """Take one of ``caller``'s tokens: None if there was one, else 429 ``code``, counted
    in ``beacon_rate_limited_total{reason}``."""
    wait_s = limiter.take(caller)
    if wait_s == 0.0:
        return None
    metrics.rate_limited.labels(reason).inc()
    return too_many(code, what, wait_s)


def _remote(request: Request, proxies: tuple[Network, ...] = ()) -> str:
    """The client's address: aiohttp's peer, or behind a trusted proxy (settings'
    ``trusted_proxies``) the address it forwarded (engine/http/proxies.py)."""
    headers: Any = getattr(request, "headers", None) or {}
    if hasattr(headers, "getall"):
        forwarded = list(headers.getall(FORWARDED_FOR, []))
    else:
        forwarded = [headers[FORWARDED_FOR]] if FORWARDED_FOR in headers else []
    return client_address(getattr(request, "remote", None), forwarded, proxies)


async def stream_changes(
    request: Any,
    desk: AlertInbox,
    still_allowed: Callable[[], Awaitable[bool]] | None = None,
    recheck_s: float = 10.0,
) -> Any:
    """Server-sent events: one ``alert`` event per change, a comment every 15 s to keep
    proxies from closing an idle stream. Ends when the client goes away, or when
    ``still_allowed`` (asked every ``recheck_s``; the change feed wakes the loop at least
    every second) says the caller's session or token is gone or may no longer read."""
    from aiohttp import web

    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    await response.write(b": beacon alert changes\n\n")
    quiet_since = time.monotonic()
    check_at = quiet_since + recheck_s
    try:
        async with desk.changes() as changes:
            async for change in changes:
                if still_allowed is not None and time.monotonic() >= check_at:
                    if not await still_allowed():
                        break
                    check_at = time.monotonic() + recheck_s
                if change is None:
                    if _gone(request):  # aiohttp does not cancel a handler whose client left
                        break
                    if time.monotonic() - quiet_since >= _SSE_HEARTBEAT_S:
                        await response.write(b": keep-alive\n\n")
                        quiet_since = time.monotonic()
                    continue
                await response.write(b"event: alert\ndata: " + orjson.dumps(change) + b"\n\n")
                quiet_since = time.monotonic()
    except (ConnectionResetError, StoreError):
        pass  # the client left, or Redis did: the browser reconnects by itself
    return response


def _gone(request: Any) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()
