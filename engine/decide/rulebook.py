"""Loading a rule bundle for use (compile + a dry run on sample events) and running the
packs' own test cases. Used by the worker, ``beacon rules validate/test/publish``.

>>> bundle = {"risk.yaml": '''
... kind: risk
... rules:
...   - {id: pins, severity: high, when: state.pin_failures_1h >= 3, reason: "{state.pin_failures_1h} PINs",
...      action: block}
... tests:
...   - name: three failures block
...     event: {type: pin_failure, channel: atm}
...     state: {pin_failures_1h: 3}
...     expect: {fired: [pins], verdict: block}
... '''}
>>> compiled = load(bundle, frozenset({"atm"}), "v1")
>>> [(r.name, r.passed) for r in run_cases(compiled)]
[('three failures block', True)]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from engine.decide.arbitration import arbitrate, shown_when_nothing_else, without_caps
from engine.decide.pipeline import DecisionPolicy, assess_risk, evaluate_rules
from engine.domain.decision import Risk
from engine.domain.events import Event, Geo
from engine.domain.features import FEATURE_NAMES, build_features
from engine.domain.policy import ArbitrationPolicy
from engine.domain.scoring import Scores
from engine.domain.state import Snapshot
from engine.rules.checks import unknown_types
from engine.rules.pack import Case, Compiled, RulePackError, compile_bundle
from engine.rules.ruleset import RuleError, RuleSet
from engine.settings import DEFAULT_EVENT_TYPES

CASE_TS = 1795428000.0  # 2026-11-23 10:00 UTC, a Monday: the default time of a case
_EXPECT = {
    "fired",
    "fires",
    "not_fired",
    "eligible",
    "eligible_includes",
    "not_eligible",
    "verdict",
    "shown",
    "not_shown",
}


def load(
    files: Mapping[str, str],
    channels: frozenset[str],
    version: str,
    event_types: Iterable[str] = DEFAULT_EVENT_TYPES,
) -> Compiled:
    """Compile a bundle and dry-run every condition on a sample event of each channel and
    type, so a type error (``1.0 + 1``, a string compared with a number) is refused now,
    and check that ``when_state_unavailable`` names only known event types."""
    compiled = compile_bundle(files, channels, version)
    unknown_types(compiled.rules.when_state_unavailable, frozenset(event_types))
    dry_run(compiled.rules, channels, tuple(event_types))
    return compiled


def dry_run(rules: RuleSet, channels: Iterable[str], event_types: tuple[str, ...]) -> None:
    clauses = [(r.id, "when", c) for r in rules.risk_rules for c in r.when.clauses]
    clauses += [
        (o.id, stage, c)
        for o in rules.offers
        for stage in ("eligibility", "applicability", "suitability")
        for c in getattr(o, stage).clauses
    ]
    for channel in sorted(channels):
        for etype in event_types:
            event = _sample_event(channel, etype)
            features = build_features(event, Snapshot(windows={}))
            scores = Scores(0.1, 0.1, {o.id: 0.05 for o in rules.offers}).to_dict()
            ctx = rules.evaluator.bind(event.to_dict(), features, {}, scores, event.ts, channel)
            for rule_id, what, clause in clauses:
                try:
                    clause.holds(ctx)
                except RuleError as exc:
                    raise RulePackError(
                        f"{rules.origins.get(rule_id, 'rules')}: rule {rule_id}: `{what}` fails on a "
                        f"sample {channel} {etype} event: {exc}"
                    ) from None


def _sample_event(channel: str, etype: str) -> Event:
    return Event(
        "sample",
        "sample",
        channel,
        etype,
        CASE_TS,
        amount=100.0,
        currency="EUR",
        device_id="dev-1",
        terminal_id="term-1",
        session_id="s-1",
        geo=Geo(51.5, -0.12),
    )


@dataclass(frozen=True)
class CaseResult:
    file: str
    name: str
    passed: bool
    problems: tuple[str, ...]
    fired: tuple[str, ...]
    eligible: tuple[str, ...]
    verdict: str


def run_cases(compiled: Compiled, policy: DecisionPolicy | None = None) -> list[CaseResult]:
    return [run_case(compiled.rules, case, policy or DecisionPolicy()) for case in compiled.cases]


def run_case(rules: RuleSet, case: Case, policy: DecisionPolicy) -> CaseResult:
    try:
        event, features, profile, scores = case_inputs(case.spec)
    except (ValueError, TypeError, KeyError) as exc:
        return CaseResult(case.file, case.name, False, (f"bad case: {exc}",), (), (), "")
    outcome = evaluate_rules(rules, event, features, profile, scores.to_dict())
    risk: Risk = assess_risk(scores, outcome, policy)
    # Cases check the ranking itself: no exploration, no control group.
    greedy = replace(
        rules.arbitration.get(event.channel) or ArbitrationPolicy(), exploration=0.0, control_group=0.0
    )
    ranked, _, _ = arbitrate(outcome.eligible, scores, risk, event.channel, greedy)
    shown = tuple(
        a.id
        for a in without_caps(
            ranked, shown_when_nothing_else(rules, event.channel, risk.verdict), policy.max_actions
        )
    )
    fired = tuple(sorted(f.rule.id for f in outcome.fired))
    eligible = tuple(sorted(o.id for o in outcome.eligible))
    expect = case.spec.get("expect") or {}
    problems = list(outcome.errors) + _check(expect, fired, eligible, risk.verdict)
    if "shown" in expect and list(expect["shown"] or []) != list(shown):
        problems.append(f"expected shown {list(expect['shown'] or [])}, got {list(shown)}")
    problems += [f"expected {a} not to be shown" for a in expect.get("not_shown") or [] if a in shown]
    return CaseResult(case.file, case.name, not problems, tuple(problems), fired, eligible, risk.verdict)


def case_inputs(spec: Mapping[str, Any]) -> tuple[Event, dict[str, Any], dict[str, Any], Scores]:
    raw = dict(spec.get("event") or {})
    unknown_expect = set(spec.get("expect") or {}) - _EXPECT
    if unknown_expect:
        raise ValueError(
            f"unknown expectation(s) {', '.join(sorted(unknown_expect))}; use {', '.join(sorted(_EXPECT))}"
        )
    geo = raw.pop("geo", None)
    event = Event(
        event_id=str(raw.pop("event_id", "case")),
        customer_id=str(raw.pop("customer_id", "case")),
        channel=str(raw.pop("channel", "atm")),
        type=str(raw.pop("type", "login")),
        ts=float(raw.pop("ts", CASE_TS)),
        amount=float(raw["amount"]) if raw.get("amount") is not None else None,
        currency=raw.get("currency"),
        device_id=raw.get("device_id"),
        terminal_id=raw.get("terminal_id"),
        session_id=raw.get("session_id"),
        geo=Geo(float(geo["lat"]), float(geo["lon"])) if geo else None,
        attributes=dict(raw.get("attributes") or {}),
    )
    profile = dict(spec.get("profile") or {})
    features = build_features(event, Snapshot(windows={}, profile=profile))
    state = dict(spec.get("state") or {})
    unknown = sorted(set(state) - FEATURE_NAMES)
    if unknown:
        raise ValueError(f"unknown state field(s) {', '.join(unknown)}")
    for name, value in state.items():
        # A case says 15000 where the engine has 15000.0: CEL arithmetic tells them apart.
        if isinstance(features[name], float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        features[name] = value
    s = dict(spec.get("scores") or {})
    scores = Scores(float(s.get("fraud", 0.0)), float(s.get("churn", 0.0)), dict(s.get("offer") or {}))
    return event, features, profile, scores


def _check(
    expect: Mapping[str, Any], fired: tuple[str, ...], eligible: tuple[str, ...], verdict: str
) -> list[str]:
    problems: list[str] = []
    got = {"fired": set(fired), "eligible": set(eligible)}
    for key, which in (("fired", "fired"), ("eligible", "eligible")):
        if key in expect and set(expect[key] or []) != got[which]:
            problems.append(f"expected {key} {sorted(expect[key] or [])}, got {sorted(got[which])}")
    for key, which, want in (
        ("fires", "fired", True),
        ("not_fired", "fired", False),
        ("eligible_includes", "eligible", True),
        ("not_eligible", "eligible", False),
    ):
        for rid in expect.get(key) or []:
            if (rid in got[which]) != want:
                problems.append(f"expected {rid} {'to be' if want else 'not to be'} {which}")
    if "verdict" in expect and expect["verdict"] != verdict:
        problems.append(f"expected verdict {expect['verdict']}, got {verdict}")
    return problems
