"""The HTTP API as plain async handlers: bytes in, :class:`Reply` out.

The web framework (Faust's aiohttp views, agents/web.py) only routes requests here,
so every status code and error body is decided and tested in one place.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from engine.decide.degraded import decide_without_state
from engine.decide.outbound import parse_request
from engine.domain import profile as profile_rules
from engine.domain.decision import Decision
from engine.domain.events import Event
from engine.domain.labels import label_of
from engine.errors import EventError, StoreError
from engine.service.batching import Overloaded
from engine.service.decisions import DecisionService, Outcome, conflicting_replay
from engine.service.logs import log_decision
from engine.service.metrics import Metrics
from engine.service.outbound import OutboundService, UnknownCustomer

JSON = "application/json"
_CUSTOMER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,127}$")


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = JSON


def error(status: int, code: str, message: str, field_name: str | None = None, **headers: str) -> Reply:
    body = {"error": {"code": code, "message": message, "field": field_name}}
    return Reply(status, orjson.dumps(body), dict(headers))


@dataclass
class Api:
    service: DecisionService
    metrics: Metrics
    ready: Callable[[], dict[str, bool]]
    on_decision: Callable[[Any], None] = lambda outcome: None  # publishes audit + alerts
    # Republishes the event of a degraded answer (engine/decide/degraded.py), so it is not lost.
    on_degraded: Callable[[Decision, bytes], None] = lambda decision, raw: None
    outbound: OutboundService | None = None  # built from ``service`` when not given
    # The live and shadow rules versions (engine/service/rulewatch.py RuleWatcher.status).
    rules_status: Callable[[], Awaitable[dict[str, Any]]] | None = None

    def __post_init__(self) -> None:
        if self.outbound is None:
            self.outbound = OutboundService(self.service)

    async def post_decision(
        self, body: bytes, explain: bool = False, channel: str | None = None, scores: bool = False
    ) -> Reply:
        """Decide one event; ``explain`` adds the full explanation (``?explain=true``) and
        the raw scores, ``scores`` the raw scores alone (``?scores=true``)."""
        started = time.perf_counter()
        settings = self.service.settings
        if self.service.rules is None:  # still starting: no version loaded yet
            return error(503, "not_ready", "rules are still loading; retry shortly", **{"Retry-After": "1"})
        try:
            event = self.service.events.parse(body)
        except EventError as err:
            self.metrics.rejected("http", err.code)
            return error(400, err.code, err.message, err.field)
        if channel is not None and event.channel != channel:
            return error(403, "wrong_channel", f"this token decides for channel {channel} only", "channel")
        try:
            fut = self.service.batcher.submit_nowait(event)
        except Overloaded:
            self.metrics.overloaded.inc()
            return error(
                429, "overloaded", "too many decisions in flight; retry shortly", **{"Retry-After": "1"}
            )
        try:
            # On timeout wait_for cancels the future: the batcher then skips the event if
            # it is still queued (see engine/service/batching.py), and the degraded answer below
            # republishes it. The batcher itself is bounded by Redis' socket timeout.
            outcome = await asyncio.wait_for(fut, settings.decision_timeout_s)
        except (StoreError, TimeoutError):  # Redis failures are counted where they happen
            return self._degraded(event, body, explain, started, scores)
        if outcome.conflict:  # the event id was decided on another payload: nothing changed
            refused = conflicting_replay(event)
            self.metrics.rejected("http", refused.code)
            return error(409, refused.code, refused.message, refused.field)
        self.on_decision(outcome)
        if outcome.decision is not None:
            self.metrics.observe_decision("http", outcome.decision, outcome.label)
            log_decision("http", outcome.decision)
        self.metrics.events.labels(
            "http", event.channel, event.type, "replayed" if outcome.replayed else "decided"
        ).inc()
        self.metrics.decision_latency.labels("http").observe(time.perf_counter() - started)
        headers = {"Beacon-Replayed": "true"} if outcome.replayed else {}
        # The default answer is the stored body as it is: nothing parsed or added.
        return Reply(200, _opted(outcome, explain, scores) if explain or scores else outcome.body, headers)

    def _degraded(
        self, event: Event, raw: bytes, explain: bool, started: float, scores: bool = False
    ) -> Reply:
        """Redis failed or did not answer within the budget: decide on the event alone
        (flagged ``degraded``) and hand the event on, so state still counts it later."""
        rules = self.service.rules
        assert rules is not None  # checked on entry; a rules swap never unsets it
        decision = decide_without_state(event, rules, self.service.scorer, self.service.policy)
        self.on_degraded(decision, raw)
        self.metrics.events.labels("http", event.channel, event.type, "unavailable").inc()
        self.metrics.observe_decision("http", decision, label_of(event))  # answered without an outcome
        log_decision("http", decision)
        self.metrics.decision_latency.labels("http").observe(time.perf_counter() - started)
        view = decision.explained_view() if explain else decision.channel_view()
        if explain or scores:
            view["scores"] = decision.scores_view()
        return Reply(200, orjson.dumps(view))

    async def score_offers(self, body: bytes, channel: str | None = None) -> Reply:
        """Score named offers for a customer without an interaction (outbound campaigns):
        engine.decide.outbound. ``channel``: a channel token's, which scores for it only."""
        reply = await self._score_offers(body, channel)
        outcome = "scored" if reply.status == 200 else orjson.loads(reply.body)["error"]["code"]
        self.metrics.offer_scoring.labels(outcome).inc()
        return reply

    async def _score_offers(self, body: bytes, channel: str | None) -> Reply:
        settings = self.service.settings
        if self.service.rules is None:
            return error(503, "not_ready", "rules are still loading; retry shortly", **{"Retry-After": "1"})
        if len(body) > settings.max_event_bytes:
            return error(413, "too_large", "request is too large")
        try:
            request = parse_request(body, settings.channels, settings.event_types)
        except EventError as err:
            return error(400, err.code, err.message, err.field)
        if not _CUSTOMER.fullmatch(request.customer_id):
            return error(400, "invalid_value", "customer id has invalid characters", "customer_id")
        if channel is not None and request.channel != channel:
            return error(403, "wrong_channel", f"this token scores for channel {channel} only", "channel")
        assert self.outbound is not None  # set in __post_init__
        try:
            scored = await self.outbound.score(request)
        except UnknownCustomer as exc:
            return error(404, "unknown_customer", str(exc))
        except StoreError as exc:
            return error(503, "state_unavailable", str(exc))
        return Reply(200, orjson.dumps(scored.to_dict()))

    async def get_customer(self, customer_id: str) -> Reply:
        if not _CUSTOMER.fullmatch(customer_id):
            return error(400, "invalid_value", "customer id has invalid characters", "customer_id")
        try:
            view = await self.service.store.customer_view(customer_id)
        except StoreError as exc:
            return error(503, "state_unavailable", str(exc))
        if view["profile"] is None and not view["last_seen"]:
            return error(404, "unknown_customer", f"no profile or state for {customer_id}")
        return Reply(200, orjson.dumps(view))

    async def put_profile(self, customer_id: str, body: bytes, by: str = "", merge: bool = False) -> Reply:
        """PUT replaces the profile, PATCH (``merge``) applies a JSON Merge Patch; either
        way the result is validated (engine/domain/profile.py) and written with an entry
        in the profile's history naming ``by``, in one compare-and-set step."""
        if not _CUSTOMER.fullmatch(customer_id):
            return error(400, "invalid_value", "customer id has invalid characters", "customer_id")
        if len(body) > self.service.settings.max_event_bytes:
            return error(413, "too_large", "profile is too large")
        try:
            sent = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return error(400, "invalid_json", f"not valid JSON: {exc}")
        if merge and not isinstance(sent, dict):
            return error(400, "not_an_object", "a merge patch must be a JSON object")
        try:
            for _ in range(5):  # another write in between: read again, apply again
                written = await self._write_profile(customer_id, sent, by, merge)
                if written is not None:
                    return Reply(200, orjson.dumps({"customer_id": customer_id, "profile": written}))
        except EventError as err:
            return error(400, err.code, err.message, err.field)
        except StoreError as exc:
            return error(503, "state_unavailable", str(exc))
        return error(409, "conflict", "the profile kept changing while this write was applied; send it again")

    async def _write_profile(
        self, customer_id: str, sent: Any, by: str, merge: bool
    ) -> dict[str, Any] | None:
        store, s = self.service.store, self.service.settings
        stored = await store.read_profile(customer_id)
        before = orjson.loads(stored) if stored else None
        after = profile_rules.validated(profile_rules.merge_patch(before, sent) if merge else sent)
        entry = {"ts": time.time(), "by": by or "anonymous", "op": "patch" if merge else "put"}
        entry["changes"] = profile_rules.shown(profile_rules.changes(before, after))
        done = await store.swap_profile(
            customer_id,
            stored,
            orjson.dumps(after),
            orjson.dumps(entry),
            s.profile_ttl_s,
            s.profile_history_max,
        )
        return after if done else None

    async def profile_history(self, customer_id: str, limit: str | None) -> Reply:
        if not _CUSTOMER.fullmatch(customer_id):
            return error(400, "invalid_value", "customer id has invalid characters", "customer_id")
        try:
            n = int(limit or 50)
        except ValueError:
            return error(400, "invalid_value", "limit must be a whole number", "limit")
        if not 1 <= n <= self.service.settings.profile_history_max:
            bound = self.service.settings.profile_history_max
            return error(400, "invalid_value", f"limit is 1 to {bound}", "limit")
        try:
            entries = await self.service.store.profile_history(customer_id, n)
        except StoreError as exc:
            return error(503, "state_unavailable", str(exc))
        return Reply(200, orjson.dumps({"customer_id": customer_id, "history": entries}))

    async def rules(self) -> Reply:
        """``GET /v1/rules``: the live version and the shadow run beside it, if any."""
        if self.rules_status is None:
            return error(503, "not_ready", "rule versions are not known here", **{"Retry-After": "1"})
        try:
            return Reply(200, orjson.dumps(await self.rules_status()))
        except StoreError as exc:
            return error(503, "state_unavailable", str(exc), **{"Retry-After": "1"})

    def healthz(self) -> Reply:
        return Reply(200, b'{"status":"ok"}')

    def readyz(self) -> Reply:
        checks = self.ready()
        ok = all(checks.values())
        return Reply(200 if ok else 503, orjson.dumps({"ready": ok, "checks": checks}))

    def metrics_page(self) -> Reply:
        self.metrics.queue_depth.set(self.service.batcher.depth)
        for component, ready in self.ready().items():
            self.metrics.ready.labels(component).set(1.0 if ready else 0.0)
        return Reply(200, self.metrics.exposition(), content_type="text/plain; version=0.0.4")


def _opted(outcome: Outcome, explain: bool, scores: bool) -> bytes:
    """The channel's body plus what the caller asked for: the full explanation and the raw
    scores (``explain``), or the raw scores (``scores``). The stored body stays short."""
    view = orjson.loads(outcome.body)
    decision = outcome.decision
    if explain:
        view["explain"] = (
            decision.explain()
            if decision is not None
            else {"note": "a repeated event: its decisions.audit record holds the explanation"}
        )
    view["scores"] = (
        decision.scores_view()
        if decision is not None
        else {"note": "a repeated event: its decisions.audit record holds the scores"}
    )
    return orjson.dumps(view)
