"""The shadow runner's logic (engine/service/shadow.py, engine/decide/shadow.py): it decides
again with the shadow version, counts, emits only differences, after the batch's answers,
within its budget. The same on real servers: tests/integration/test_shadow_rules.py."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from engine.decide.pipeline import DecisionPolicy, decide, prepare
from engine.decide.rulebook import load
from engine.domain.events import Event
from engine.domain.scoring import BuiltinScorer
from engine.domain.state import Snapshot
from engine.service.metrics import Metrics
from engine.service.shadow import Item, ShadowRunner
from tests.unit.rulefixture import CHANNELS, OFFERS, RISK, fixture_rules

TS = 1_795_428_000.0
LIVE = fixture_rules("v1-000000000001")
# The candidate: the PIN rule reviews instead of blocking, and a new rule on large transfers.
CANDIDATE = RISK.replace("    action: block\n    suppress: 1h", "    action: review\n    suppress: 1h")
EXTRA = """kind: risk
rules:
  - id: big_transfer
    severity: medium
    when: event.type == "transfer" && event.amount >= 500.0
    reason: "transfer of {event.amount:.2f}"
    action: review
"""
SHADOW = load(
    {"risk.yaml": CANDIDATE, "extra.yaml": EXTRA, "offers.yaml": OFFERS}, CHANNELS, "v2-000000000002"
).rules
POLICY, SCORER = DecisionPolicy(), BuiltinScorer()


def items(events: list[tuple[Event, Snapshot]]) -> list[Item]:
    out: list[Item] = []
    for ev, snap in events:
        prep = prepare(ev, snap, LIVE, SCORER)
        out.append((ev, snap, prep, decide(ev, snap, LIVE, SCORER, POLICY, prep)))
    return out


EVENTS = [
    (Event("e1", "c1", "atm", "pin_failure", TS), Snapshot(windows={}, pin_failures_1h=3)),
    (Event("e2", "c2", "internet", "transfer", TS, amount=800.0), Snapshot(windows={})),
    (Event("e3", "c3", "internet", "transfer", TS, amount=80.0), Snapshot(windows={})),
    (Event("e4", "c4", "mobile", "login", TS), Snapshot(windows={})),
]


def value(m: Metrics, name: str, **labels: str) -> float:
    return m.registry.get_sample_value(name, labels) or 0.0


def test_differences_are_counted_by_kind_rule_and_channel() -> None:
    m = Metrics(process=False)
    runner = ShadowRunner(POLICY, m.shadow, 100)
    diffs = runner.evaluate(SHADOW, LIVE, SCORER, items(EVENTS))
    assert [d.live_decision.event.event_id for d in diffs] == ["e1", "e2"]
    pin, transfer = diffs
    assert (pin.live.verdict, pin.shadow.verdict, pin.kinds) == ("block", "review", ("verdict", "offers"))
    assert pin.blamed() == ("(other)",)  # the same rule fired, with another action
    assert transfer.added == ("big_transfer",) and transfer.removed == ()
    assert value(m, "beacon_shadow_evaluations_total", channel="internet") == 2
    assert value(m, "beacon_shadow_fires_total", rule="big_transfer") == 1
    assert value(m, "beacon_shadow_fires_total", rule="pin_bruteforce") == 1
    assert value(m, "beacon_shadow_differences_total", kind="verdict", channel="atm") == 1
    assert value(m, "beacon_shadow_disagreements_total", rule="(other)", channel="atm") == 1
    assert value(m, "beacon_shadow_disagreements_total", rule="big_transfer", channel="internet") == 1


def test_the_same_version_in_shadow_finds_no_difference() -> None:
    runner = ShadowRunner(POLICY, None, 100)
    assert runner.evaluate(LIVE, LIVE, SCORER, items(EVENTS)) == []


async def test_records_go_out_after_the_batch_answers_and_over_budget_is_dropped() -> None:
    m = Metrics(process=False)
    runner = ShadowRunner(POLICY, m.shadow, 5)
    order: list[str] = []
    sent: list[tuple[bytes, dict[str, Any]]] = []

    async def emit(key: bytes, record: bytes) -> asyncio.Future[None]:
        order.append("shadow")
        sent.append((key, orjson.loads(record)))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    runner.emit = emit
    answered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    answered.add_done_callback(lambda _: order.append("answer"))
    runner.offer(SHADOW, LIVE, SCORER, items(EVENTS))  # 4 events: within the budget of 5
    answered.set_result(None)  # the batcher resolves the callers' futures after the batch
    runner.offer(SHADOW, LIVE, SCORER, items(EVENTS[:2]))  # 4 + 2 > 5: not shadowed
    assert runner.depth == 4
    assert value(m, "beacon_shadow_dropped_total", reason="queue_full") == 2
    for _ in range(20):
        await asyncio.sleep(0)
    await runner.stop()
    assert order[0] == "answer" and order.count("shadow") == 2
    assert [key for key, _ in sent] == [b"c1", b"c2"]
    assert sent[1][1]["rules_added"] == ["big_transfer"] and sent[1][1]["differences"][0] == "verdict"
    assert runner.depth == 0 and value(m, "beacon_shadow_evaluations_total", channel="atm") == 1
