"""A month of ``decisions.audit`` records with a known planted uplift (issue 18, item 4).

Every decision is made by the engine's own pure decision function (engine.decide.pipeline
``decide``, the shipped starter pack with half the customers in the control group and
10 % exploration) and committed as the commit script would with no cap reached
(engine.store.codec ``apply_commit``): the records are what a worker writes.

The customers: all eligible for ``credit_card_gold`` and ``personal_loan_preapproved``.
Planted: a customer shown the Gold card converts to it with probability ``BASE_GOLD +
UPLIFT_GOLD``, one not shown (held out) with ``BASE_GOLD``; the loan converts with
``BASE_LOAN`` whether shown or not (no uplift). Some customers answer the offers shown
(accepted, declined; the rest ignore them). Deterministic: a seed, ids and hashes.
"""

from __future__ import annotations

import random
from typing import Any

import orjson

from engine.decide.pipeline import DecisionPolicy, acknowledge, decide
from engine.decide.rulebook import load
from engine.domain.events import Event
from engine.domain.scoring import BuiltinScorer
from engine.domain.state import Snapshot
from engine.rules.pack import read_bundle
from engine.rules.ruleset import RuleSet
from engine.settings import Settings
from engine.store.codec import apply_commit

GOLD, LOAN = "credit_card_gold", "personal_loan_preapproved"
BASE_GOLD, UPLIFT_GOLD, BASE_LOAN = 0.10, 0.10, 0.08
DAY = 86400.0
SEGMENTS = ("mass", "affluent", "young")
CHANNELS = ("mobile", "internet")


def month_rules() -> RuleSet:
    """The starter pack, with a control group large enough to measure in a test month."""
    s = Settings()
    files = read_bundle(s.rules_path())
    old = "default: {max_actions: 3, exploration: 0.05, control_group: 0.02}"
    assert old in files["offers.yaml"], "the starter pack's arbitration line changed"
    files["offers.yaml"] = files["offers.yaml"].replace(
        old, "default: {max_actions: 3, exploration: 0.1, control_group: 0.5}"
    )
    return load(files, frozenset(s.channels), "month-test").rules


def month_of_audit(start: float, customers: int = 2400, seed: int = 18) -> list[dict[str, Any]]:
    """The records (as decoded JSON, in time order) of a month from ``start``."""
    rng = random.Random(seed)
    rules = month_rules()
    scorer, policy = BuiltinScorer(), DecisionPolicy()
    out: list[tuple[float, dict[str, Any]]] = []
    n = 0
    for i in range(customers):
        cid = f"M{i:05d}"
        profile = {"segment": SEGMENTS[i % 3], "income_band": "high", "products": ["current"],
                   "kyc_risk": "low", "preapproved_loan_limit": 5000}  # fmt: skip
        ts = start + rng.uniform(0, 27) * DAY
        channel = CHANNELS[i % 2]
        event = Event(f"login-{cid}", cid, channel, "login", round(ts, 3))
        decision = decide(event, Snapshot(windows={}, profile=profile), rules, scorer, policy)
        k = min(decision.max_actions, len(decision.actions))
        committed, _ = apply_commit(decision, {"picked": list(range(k)), "alerts": [], "body": "{}"})
        assert committed is not None
        out.append((ts, _json(committed.audit_view())))
        shown = {a.id for a in committed.actions}
        for offer, p in ((GOLD, BASE_GOLD + (UPLIFT_GOLD if GOLD in shown else 0.0)), (LOAN, BASE_LOAN)):
            if offer in shown and rng.random() < 0.3:
                answer = "accepted" if rng.random() < 0.5 else "declined"
                attrs = {"decision_id": committed.decision_id, "action_id": offer, "response": answer}
                n += 1
                reply = Event(f"resp-{n}", cid, channel, "offer_response", ts + 3600.0, attributes=attrs)
                out.append((reply.ts, _json(acknowledge(reply, rules).audit_view())))
            if rng.random() < p:
                n += 1
                when = round(ts + rng.uniform(0.1, 25) * DAY, 3)
                conv = Event(f"conv-{n}", cid, channel, "conversion", when, amount=float(rng.randint(100, 900)),
                             currency="GBP", attributes={"product": offer})  # fmt: skip
                out.append((when, _json(acknowledge(conv, rules).audit_view())))
    out.sort(key=lambda pair: pair[0])
    return [record for _, record in out]


def as_jsonl(records: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


def _json(view: dict[str, Any]) -> dict[str, Any]:
    decoded: dict[str, Any] = orjson.loads(orjson.dumps(view))  # as a consumer reads it
    return decoded
