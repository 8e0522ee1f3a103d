"""The HTTP API as plain async handlers: bytes in, :class:`Reply` out.

The web framework (Faust's aiohttp views, agents/web.py) only routes requests here,
so every status code and error body is decided and tested in one place.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from engine.decide.degraded import decide_without_state
from engine.domain.decision import Decision
from engine.domain.events import Event
from engine.domain.labels import label_of
from engine.errors import EventError, StoreError
from engine.service.batching import Overloaded
from engine.service.decisions import DecisionService, Outcome, conflicting_replay
from engine.service.logs import log_decision
from engine.service.metrics import Metrics

JSON = "application/json"
_CUSTOMER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,127}$")
_PROFILE_FIELDS = {
    "segment": str,
    "age_band": str,
    "income_band": str,
    "kyc_risk": str,
    "timezone": str,
    "products": list,
    "home_geo": dict,
    "tenure_months": int,
    "name": str,
}


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

    async def post_decision(self, body: bytes, explain: bool = False, channel: str | None = None) -> Reply:
        """Decide one event; ``explain`` adds the full explanation (``?explain=true``)."""
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
            return self._degraded(event, body, explain, started)
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
        return Reply(200, _explained(outcome) if explain else outcome.body, headers)

    def _degraded(self, event: Event, raw: bytes, explain: bool, started: float) -> Reply:
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
        return Reply(200, orjson.dumps(view))

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

    async def put_profile(self, customer_id: str, body: bytes) -> Reply:
        if not _CUSTOMER.fullmatch(customer_id):
            return error(400, "invalid_value", "customer id has invalid characters", "customer_id")
        if len(body) > self.service.settings.max_event_bytes:
            return error(413, "too_large", "profile is too large")
        try:
            profile = validate_profile(orjson.loads(body))
        except orjson.JSONDecodeError as exc:
            return error(400, "invalid_json", f"not valid JSON: {exc}")
        except EventError as err:
            return error(400, err.code, err.message, err.field)
        try:
            await self.service.store.put_profile(customer_id, profile, self.service.settings.profile_ttl_s)
        except StoreError as exc:
            return error(503, "state_unavailable", str(exc))
        return Reply(200, orjson.dumps({"customer_id": customer_id, "profile": profile}))

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


def validate_profile(data: Any) -> dict[str, Any]:
    """Static profile attributes; unknown attributes are kept, known ones type-checked.

    >>> validate_profile({"segment": "mass", "products": ["current"]})
    {'segment': 'mass', 'products': ['current']}
    >>> validate_profile({"segment": 3})
    Traceback (most recent call last):
    ...
    engine.errors.EventError: segment must be str
    """
    if not isinstance(data, dict):
        raise EventError("not_an_object", "a profile must be a JSON object")
    for name, typ in _PROFILE_FIELDS.items():
        if name in data and data[name] is not None and not isinstance(data[name], typ):
            raise EventError("wrong_type", f"{name} must be {typ.__name__}", name)
    return data


def _explained(outcome: Outcome) -> bytes:
    """The channel's body plus the full explanation (the stored body itself stays short)."""
    view = orjson.loads(outcome.body)
    if outcome.decision is not None:
        view["explain"] = outcome.decision.explain()
    else:
        view["explain"] = {"note": "a repeated event: its decisions.audit record holds the explanation"}
    return orjson.dumps(view)
