"""``GET /v1/reports/offers``: offer performance and uplift over a period, read from
``decisions.audit`` (engine/service/auditlog.py) and aggregated by the pure report
(engine/decide/offerreport.py). Analysts, viewers and risk admins (permission ``report``).

Query: ``since`` and ``until`` (epoch seconds or ISO 8601; default the last 30 days),
``channel``, ``segment``, ``offer``, ``target_epsilon`` (the exploration share the
off-policy estimate evaluates; default 0, greedy). A period is at most
``MAX_PERIOD_DAYS`` long. Conversions are read up to the attribution window after
``until`` (or now), so an offer shown on the last day still counts its conversions.
A report reads and counts in the worker itself, one at a time (429 ``report_running``
meanwhile); for long periods on a busy deployment use ``beacon report offers``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

import orjson

from engine.decide.offerreport import DAY_S, OfferReport, ReportOptions, from_pack
from engine.domain.periods import parse_time
from engine.errors import EventError
from engine.http.api import Reply, error
from engine.rules.ruleset import Offer
from engine.settings import Settings

MAX_PERIOD_DAYS = 92
# One report at a time per worker: it reads the audit topic and counts in the worker's own
# process, beside the decisions. A second request meanwhile gets 429 and tries again.
_RUNNING = asyncio.Lock()
_RETRY_S = "10"
Reader = Callable[[Settings, float, float | None], AsyncIterator[dict[str, Any]]]


def period(query: Mapping[str, str], now: float) -> tuple[float, float]:
    """``since`` and ``until`` of a query: by default the 30 days to ``now``, at most
    ``MAX_PERIOD_DAYS`` long; EventError (``invalid_value``, its field) on bad input.

    >>> period({"since": "2026-11-01", "until": "2026-11-02"}, 0.0)
    (1793491200.0, 1793577600.0)
    >>> period({"until": "2026-11-01"}, 0.0)[0] == 1793491200.0 - 30 * DAY_S
    True
    """
    until = parse_time(query["until"], "until") if query.get("until") else now
    since = parse_time(query["since"], "since") if query.get("since") else until - 30 * DAY_S
    if since >= until:
        raise EventError("invalid_value", "since must be before until", "since")
    if until - since > MAX_PERIOD_DAYS * DAY_S:
        raise EventError("invalid_value", f"a period is at most {MAX_PERIOD_DAYS} days", "since")
    return since, until


def busy() -> Reply | None:
    """429 ``report_running`` while this worker runs a report (offers or backtest), else None."""
    if _RUNNING.locked():
        return error(429, "report_running", "another report is running on this worker: try again shortly",
                     **{"Retry-After": _RETRY_S})  # fmt: skip
    return None


def report_options(query: Mapping[str, str], settings: Settings, now: float,
                   offers: Iterable[Offer] = ()) -> ReportOptions:  # fmt: skip
    """The report's options from a query (or the CLI's arguments); EventError on bad input."""
    since, until = period(query, now)
    eps = 0.0
    if query.get("target_epsilon"):
        try:
            eps = float(query["target_epsilon"])
        except ValueError:
            eps = -1.0
        if not 0.0 <= eps <= 1.0:
            raise EventError("invalid_value", "target_epsilon is a share from 0 to 1", "target_epsilon")
    return ReportOptions(
        since=since,
        until=until,
        attribution_s=settings.offer_attribution_s,
        response_window_s=settings.offer_response_window_s,
        target_epsilon=eps,
        channel=query.get("channel") or None,
        segment=query.get("segment") or None,
        offer=query.get("offer") or None,
        **from_pack(offers),  # values, product codes and attribution windows of the pack's offers
    )


def read_until(options: ReportOptions, now: float) -> float:
    """How far to read the audit: conversions up to the attribution window after the period."""
    return min(options.until + options.longest_window, now + 1.0)


async def build_report(records: AsyncIterator[dict[str, Any]], options: ReportOptions) -> dict[str, Any]:
    """Aggregate as the records stream in, yielding to the event loop now and then."""
    acc = OfferReport(options)
    n = 0
    async for record in records:
        acc.add(record)
        n += 1
        if n % 5000 == 0:
            await asyncio.sleep(0)
    return acc.result()


async def offer_report_reply(query: Mapping[str, str], settings: Settings, reader: Reader,
                             offers: Iterable[Offer] = ()) -> Reply:  # fmt: skip
    now = time.time()
    try:
        options = report_options(query, settings, now, offers)
    except EventError as exc:
        return error(400, exc.code, str(exc), exc.field)
    refused = busy()
    if refused is not None:
        return refused
    async with _RUNNING:
        try:
            report = await build_report(reader(settings, options.since, read_until(options, now)), options)
        except Exception as exc:  # noqa: BLE001 - the broker is away or the topic missing: say so
            return error(503, "audit_unavailable", f"decisions.audit could not be read: {exc}")
    return Reply(200, orjson.dumps(report))
