"""``GET /v1/reports/backtest``: the shadow rules version this worker runs, backtested
against what was decided over a period (permission ``report``, like the offer report).

The same backtest as ``beacon backtest --rules DIR`` (engine/service/backtest.py): every
``decisions.audit`` record of the period decided again with the candidate (here the
shadow version, ``service.shadow_rules``: signed, checked and compiled by the worker's
rule watcher; the models as recorded), against the fraud labels of the ``feedback``
topic. The JSON is the command's ``--format json`` report, byte for byte but for the
candidate's name (the shadow's version, ``v7-<digest>``, where the command names the
folder's bundle ``candidate-<digest>``); ``format=md`` gives its Markdown.

Query: ``since``, ``until`` (as the offer report: epoch seconds or ISO 8601, default the
last 30 days, at most ``MAX_PERIOD_DAYS``), ``channel`` (one, or several comma-separated;
default all), ``format`` (``json`` or ``md``). One report at a time per worker, offers or
backtest (429 ``report_running``); no shadow version running here: 409 ``no_shadow``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from engine.decide.backtest import Candidate
from engine.errors import EventError
from engine.http.api import Reply, error
from engine.http.reports import _RUNNING, busy, period
from engine.rules.ruleset import RuleSet
from engine.service.backtest import Request, backtest_topics, decision_policy, report_bytes
from engine.settings import Settings

FORMATS = {"json": "application/json", "md": "text/markdown"}
NO_SHADOW = (
    "no shadow rules version runs on this worker: publish one with `beacon rules publish --shadow DIR` "
    "(or backtest a folder of packs with `beacon backtest --rules DIR`)"
)
Runner = Callable[[Settings, Candidate, Request], Awaitable[dict[str, Any]]]


def backtest_request(query: Mapping[str, str], settings: Settings, now: float) -> tuple[Request, str]:
    """The backtest's request and the answer's format from a query; EventError on bad input.

    >>> from engine.settings import Settings
    >>> request, fmt = backtest_request({"since": "2026-11-01", "until": "2026-11-02",
    ...                                  "channel": "mobile,atm", "format": "md"}, Settings(), 0.0)
    >>> request.since, request.until, request.channels, fmt
    (1793491200.0, 1793577600.0, ('atm', 'mobile'), 'md')
    >>> backtest_request({"channel": "fax"}, Settings(), 1793491200.0)
    Traceback (most recent call last):
    ...
    engine.errors.EventError: unknown channel 'fax' (the channels: atm, branch, call_centre, internet, mobile)
    """
    since, until = period(query, now)
    channels = tuple(sorted({c.strip() for c in (query.get("channel") or "").split(",") if c.strip()}))
    for channel in channels:
        if channel not in settings.channels:
            known = ", ".join(sorted(settings.channels))
            message = f"unknown channel {channel!r} (the channels: {known})"
            raise EventError("invalid_value", message, "channel")
    fmt = query.get("format") or "json"
    if fmt not in FORMATS:
        raise EventError("invalid_value", "format is json or md", "format")
    return Request(rules_dir=None, since=since, until=until, channels=channels), fmt


async def backtest_reply(
    query: Mapping[str, str], settings: Settings, shadow: RuleSet | None, run: Runner = backtest_topics
) -> Reply:
    """The report of the shadow version ``shadow`` (None: 409), or the error's answer."""
    try:
        request, fmt = backtest_request(query, settings, time.time())
    except EventError as exc:
        return error(400, exc.code, str(exc), exc.field)
    if shadow is None:
        return error(409, "no_shadow", NO_SHADOW)
    refused = busy()
    if refused is not None:
        return refused
    async with _RUNNING:
        try:
            report = await run(settings, Candidate(shadow, decision_policy(settings)), request)
        except Exception as exc:  # noqa: BLE001 - the broker is away or a topic missing: say so
            return error(503, "audit_unavailable", f"decisions.audit could not be read: {exc}")
    return Reply(200, report_bytes(report, fmt), content_type=FORMATS[fmt])
