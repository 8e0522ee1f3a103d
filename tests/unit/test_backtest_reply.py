"""``GET /v1/reports/backtest``'s answers (engine/http/backtests.py), with the read of the
topics replaced by the pure backtest of tests/unit/test_backtest.py's three days; the
real read is tests/integration/test_backtest_api.py."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from engine.decide.backtest import Candidate
from engine.errors import BrokerError
from engine.http.backtests import NO_SHADOW, backtest_reply
from engine.http.reports import _RUNNING
from engine.service.backtest import Request, backtest, candidate_rules, decision_policy, report_bytes
from engine.settings import Settings
from tests.unit.test_backtest import DAY, T0, candidate_dir, month, run  # noqa: F401 - a fixture

SETTINGS = Settings()
PERIOD = {"since": str(T0), "until": str(T0 + 3 * DAY)}


def runner(records: list[dict[str, Any]], seen: list[Candidate] | None = None) -> Any:
    async def run_it(settings: Settings, candidate: Candidate, request: Request) -> dict[str, Any]:
        if seen is not None:
            seen.append(candidate)
        return backtest(records, (), candidate, request, {"audit": "decisions.audit"})

    return run_it


async def test_the_report_is_the_commands_for_the_shadow_version(candidate_dir: Any) -> None:  # noqa: F811
    records, hand = month()
    expected = run(records, candidate_dir)  # the candidate from its folder, as the command loads it
    shadow, _ = candidate_rules(SETTINGS, candidate_dir)
    seen: list[Candidate] = []
    reply = await backtest_reply(PERIOD, SETTINGS, shadow, runner(records, seen))
    assert reply.status == 200 and reply.content_type == "application/json"
    assert seen[0].rules is shadow and seen[0].scorer is None  # the models as recorded
    got = orjson.loads(reply.body)
    assert got["rules"] == expected["rules"] and got["verdicts"] == expected["verdicts"]
    assert got["rules"]["pin_bruteforce"]["new"]["fires"] == hand["pin_new"]
    # The command's bytes (sorted keys, indented), and its Markdown.
    request = Request(None, since=T0, until=T0 + 3 * DAY)
    candidate = Candidate(shadow, decision_policy(SETTINGS))
    direct = backtest(records, (), candidate, request, {"audit": "decisions.audit"})
    assert reply.body == report_bytes(direct, "json")
    md = await backtest_reply({**PERIOD, "format": "md"}, SETTINGS, shadow, runner(records))
    assert md.status == 200 and md.content_type.startswith("text/markdown")
    assert md.body == report_bytes(direct, "md")
    atm = await backtest_reply({**PERIOD, "channel": "atm"}, SETTINGS, shadow, runner(records))
    assert set(orjson.loads(atm.body)["verdicts"]["by_channel"]) == {"atm"}


async def test_bad_input_no_shadow_busy_and_broker_away(candidate_dir: Any) -> None:  # noqa: F811
    shadow, _ = candidate_rules(SETTINGS, candidate_dir)
    records, _ = month()
    for query, field in (({"since": "soon"}, "since"), ({**PERIOD, "channel": "fax"}, "channel"),
                         ({**PERIOD, "format": "pdf"}, "format"),
                         ({"since": str(T0), "until": str(T0 + 93 * DAY)}, "since")):  # fmt: skip
        bad = await backtest_reply(query, SETTINGS, shadow, runner(records))
        error = orjson.loads(bad.body)["error"]
        assert (bad.status, error["code"], error["field"]) == (400, "invalid_value", field), query
    none = await backtest_reply(PERIOD, SETTINGS, None, runner(records))
    assert none.status == 409 and orjson.loads(none.body)["error"] == {
        "code": "no_shadow", "message": NO_SHADOW, "field": None
    }  # fmt: skip
    assert "beacon rules publish --shadow DIR" in NO_SHADOW

    async def away(settings: Settings, candidate: Candidate, request: Request) -> dict[str, Any]:
        raise BrokerError("cannot reach the broker at nowhere:9092")

    down = await backtest_reply(PERIOD, SETTINGS, shadow, away)
    assert down.status == 503 and orjson.loads(down.body)["error"]["code"] == "audit_unavailable"

    # One report at a time per worker, offers or backtest: the lock they share.
    started, release = asyncio.Event(), asyncio.Event()

    async def slow(settings: Settings, candidate: Candidate, request: Request) -> dict[str, Any]:
        started.set()
        await release.wait()
        return backtest(records, (), candidate, request, {})

    first = asyncio.create_task(backtest_reply(PERIOD, SETTINGS, shadow, slow))
    await started.wait()
    assert _RUNNING.locked()
    busy = await backtest_reply(PERIOD, SETTINGS, shadow, runner(records))
    assert busy.status == 429 and orjson.loads(busy.body)["error"]["code"] == "report_running"
    assert busy.headers["Retry-After"]
    release.set()
    assert (await first).status == 200 and not _RUNNING.locked()
