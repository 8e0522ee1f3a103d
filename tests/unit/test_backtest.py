"""Issue 18, item 2: the backtest's pure part, on audit records the real decision function
made (engine.decide.pipeline.decide, committed as the commit step would without caps).

The planted change: PIN brute force at 2 failures instead of 3, and one device shared
by 8 customers instead of 5 before a login steps up. The expected counts are worked out
by hand from how the records were generated, not by deciding them again.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from engine.cli.main import main
from engine.decide.arbitration import without_caps
from engine.decide.backtest import Candidate, fraud_labels, redecide
from engine.decide.pipeline import DecisionPolicy, decide
from engine.decide.rulebook import load
from engine.domain.decision import Decision
from engine.domain.events import Event
from engine.domain.periods import parse_time
from engine.domain.scoring import BuiltinScorer
from engine.domain.state import Snapshot
from engine.rules.pack import read_bundle
from engine.service.backtest import Request, backtest, candidate_rules, report_bytes, write
from engine.settings import Settings
from engine.store.codec import fallback_of

ROOT = Path(__file__).resolve().parents[2]
T0 = 1795392000.0  # 2026-11-23 00:00 UTC
HOUR, DAY = 3600.0, 86400.0
PROFILE = {"timezone": "UTC", "tenure_months": 24, "products": ["current"], "income_band": "high"}
SETTINGS = Settings()
LIVE = load(read_bundle(ROOT / "rules"), frozenset(SETTINGS.channels), "live-1").rules


def committed(decision: Decision) -> dict[str, Any]:
    """The audit record the commit step writes when no cap applies."""
    shown = without_caps(decision.actions, fallback_of(decision), decision.max_actions)
    return orjson.loads(orjson.dumps(replace(decision, actions=shown).audit_view()))


def record(event: Event, snap: Snapshot) -> dict[str, Any]:
    return committed(decide(event, snap, LIVE, BuiltinScorer(), DecisionPolicy()))


def month() -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Three days of traffic. Customer Pk fails their PIN k times (k = 1..4) each day, an
    hour apart within the hour; device D-n logs n customers in (n = 4..9) on mobile; plus
    internet logins that change nothing. Fraud reports label the 3rd PIN failure of P3 and
    the 2nd of P4 each day, and one login of the 9-customer device; P4's 4th failure is
    reported then confirmed legitimate by a chargeback dispute in the customer's favour."""
    out: list[dict[str, Any]] = []
    for day in range(3):
        base = T0 + day * DAY + 9 * HOUR
        for k in range(1, 5):
            for n in range(1, k + 1):
                ev = Event(f"pin-{day}-{k}-{n}", f"P{k}", "atm", "pin_failure", base + k * 600 + n * 60,
                           terminal_id="T1")  # fmt: skip
                out.append(record(ev, Snapshot(windows={}, pin_failures_1h=n, profile=PROFILE)))
        for n in range(4, 10):
            ev = Event(
                f"login-{day}-{n}", f"D{n}", "mobile", "login", base + 5 * HOUR + n, device_id=f"D-{n}"
            )
            out.append(record(ev, Snapshot(windows={}, device_customers_24h=n, profile=PROFILE)))
        for i in range(3):
            ev = Event(
                f"web-{day}-{i}", f"W{i}", "internet", "login", base + 7 * HOUR + i, device_id=f"W-{i}"
            )
            out.append(record(ev, Snapshot(windows={}, devices=1, device_known=True, profile=PROFILE)))
        reports = [("atm", f"pin-{day}-3-3", False, "fraud_report"), ("atm", f"pin-{day}-4-2", False, "fraud_report"),
                   ("mobile", f"login-{day}-9", False, "fraud_report"),
                   ("atm", f"pin-{day}-4-4", False, "fraud_report"), ("atm", f"pin-{day}-4-4", True, "chargeback")]  # fmt: skip
        for i, (channel, ref, legit, kind) in enumerate(reports):
            attrs: dict[str, Any] = {"ref_event_id": ref, "ref_channel": channel}
            if legit:
                attrs["legitimate"] = True
            ev = Event(f"rep-{day}-{i}", "P0", "mobile", kind, base + 12 * HOUR + i, attributes=attrs)
            out.append(record(ev, Snapshot(windows={})))
    # By hand, per day: PIN failures 1+2+3+4 = 10; live fires on n >= 3 (P3: 1, P4: 2) = 3,
    # the candidate on n >= 2 (P2: 1, P3: 2, P4: 3) = 6: 3 more, each allow -> block.
    # Logins: live steps up at n >= 5 (5..9: 5), the candidate at n >= 8 (8, 9: 2): 3 fewer,
    # each step_up -> allow. Fraud: pin-3-3, pin-4-2, login-9 (pin-4-4 turned legitimate).
    hand = {"pin_old": 3 * 3, "pin_new": 6 * 3, "dev_old": 5 * 3, "dev_new": 2 * 3, "fraud": 3 * 3,
            "legit": 1 * 3, "events": (10 + 6 + 3) * 3, "labels": 5 * 3}  # fmt: skip
    return out, hand


@pytest.fixture(scope="module")
def candidate_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("candidate")
    for f in (ROOT / "rules").glob("*.yaml"):
        shutil.copy(f, folder / f.name)
    risk = (folder / "risk.yaml").read_text()
    for before, after in (("state.pin_failures_1h >= 3", "state.pin_failures_1h >= 2"),
                          ("state.device_customers_24h >= 5", "state.device_customers_24h >= 8")):  # fmt: skip
        assert risk.count(before) == 1
        risk = risk.replace(before, after)
    (folder / "risk.yaml").write_text(risk)
    return folder


def run(records: list[dict[str, Any]], rules_dir: Path) -> dict[str, Any]:
    rules, _ = candidate_rules(SETTINGS, rules_dir)
    request = Request(rules_dir, since=T0, until=T0 + 3 * DAY)
    return backtest(records, (), Candidate(rules), request, {"audit": "test"})


def test_the_live_rules_change_nothing() -> None:
    records, hand = month()
    report = run(records, ROOT / "rules")
    assert report["records"] == {"re_decided": hand["events"], "changed": 0, "skipped": {"label_event": 15}}
    assert (
        report["verdicts"]["changed"] == 0 and report["alerts"]["added"] == report["alerts"]["removed"] == 0
    )
    assert report["offers"]["events_changed"] == 0
    for c in report["verdicts"]["by_channel"].values():
        off_diagonal = sum(n for old, row in c["matrix"].items() for new, n in row.items() if old != new)
        assert off_diagonal == 0


def test_a_planted_rule_change_matches_the_hand_count(candidate_dir: Path) -> None:
    records, hand = month()
    report = run(records, candidate_dir)
    pins, devices = report["rules"]["pin_bruteforce"], report["rules"]["device_shared_across_customers"]
    assert (pins["old"]["fires"], pins["new"]["fires"]) == (hand["pin_old"], hand["pin_new"])
    assert (devices["old"]["fires"], devices["new"]["fires"]) == (hand["dev_old"], hand["dev_new"])
    assert report["alerts"]["by_rule"] == {
        "device_shared_across_customers": {"added": 0, "removed": hand["dev_old"] - hand["dev_new"]},
        "pin_bruteforce": {"added": hand["pin_new"] - hand["pin_old"], "removed": 0},
    }
    atm, mobile = report["verdicts"]["by_channel"]["atm"], report["verdicts"]["by_channel"]["mobile"]
    assert atm["matrix"]["allow"]["block"] == 9 and atm["stricter"] == 9 and atm["looser"] == 0
    assert mobile["matrix"]["step_up"]["allow"] == 9 and mobile["looser"] == 9
    assert report["verdicts"]["by_channel"]["internet"]["matrix"]["allow"]["allow"] == 9
    # Labels: 3 fraud a day, pin-4-4 reported then cleared by the stronger chargeback source.
    assert report["labels"] == {"fraud": hand["fraud"], "legitimate": hand["legit"], "unlabelled": 45}
    # pin_bruteforce: live fired on pin-3-3 (fraud), pin-4-3, pin-4-4; the candidate also on
    # pin-2-2, pin-3-2, pin-4-2 (fraud). 6 of 9 labelled fraud events are PIN failures.
    assert pins["old"] == {"fires": 9, "fraud": 3, "precision": 0.3333, "recall": 0.3333}
    assert pins["new"] == {"fires": 18, "fraud": 6, "precision": 0.3333, "recall": 0.6667}
    assert devices["new"] == {"fires": 6, "fraud": 3, "precision": 0.5, "recall": 0.3333}
    # The ATM shows the card-retaining risk treatment instead of its fallback for 9 events.
    assert report["offers"]["by_action"]["atm_decline_retain_card"] == {"old": 9, "new": 18, "gained": 9,
                                                                        "lost": 0}  # fmt: skip
    assert report["daily"]["2026-11-23"]["alerts_old"] == 3 + 5
    assert report["daily"]["2026-11-23"]["alerts_new"] == 6 + 2


def test_the_same_audit_and_candidate_give_byte_identical_reports(
    candidate_dir: Path, tmp_path: Path
) -> None:
    records, _ = month()
    shuffled = list(records)
    random.Random(7).shuffle(shuffled)
    shuffled.append(dict(shuffled[0]))  # a record delivered twice counts once
    first, second = run(records, candidate_dir), run(shuffled, candidate_dir)
    assert second["records"]["skipped"].pop("duplicate") == 1
    first["records"]["skipped"].pop("duplicate", None)
    for fmt in ("json", "md"):
        assert report_bytes(first, fmt) == report_bytes(run(records, candidate_dir), fmt)
    assert report_bytes(first, "json") == report_bytes(second, "json")
    pytest.importorskip("matplotlib")
    write(first, tmp_path / "a")
    write(run(records, candidate_dir), tmp_path / "b")
    for name in ("backtest.json", "backtest.md", "backtest.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_caps_the_live_decision_met_hold_for_the_candidate() -> None:
    ev = Event("c1", "C9", "atm", "withdrawal", T0 + HOUR, amount=40.0, terminal_id="T1")
    snap = Snapshot(windows={}, profile=PROFILE)
    decision = decide(ev, snap, LIVE, BuiltinScorer(), DecisionPolicy())
    assert decision.actions, "the withdrawal must have a candidate offer for this test"
    capped = decision.actions[0].id
    rec = committed(replace(decision, actions=decision.actions[1:]))
    rec["explain"]["dropped"].append({"id": capped, "stage": "contact_policy", "why": "offer_cap"})
    again = redecide(rec, Candidate(LIVE))
    assert capped not in again.new_shown and again.new_shown == again.old_shown


def test_label_resolution_follows_source_ranks() -> None:
    labels = [
        {
            "kind": "fraud",
            "event_id": "t1",
            "channel": "atm",
            "label": True,
            "ts": 1.0,
            "source": "disposition",
        },
        {
            "kind": "fraud",
            "event_id": "t1",
            "channel": "atm",
            "label": False,
            "ts": 2.0,
            "source": "chargeback",
        },
        {"kind": "fraud", "event_id": "t2", "channel": "atm", "label": False, "ts": 1.0},
        {"kind": "fraud", "event_id": "t2", "channel": "atm", "label": True, "ts": 2.0},  # contested: stands
    ]
    assert fraud_labels(labels) == {("atm", "t1"): True, ("atm", "t2"): False}


def test_time_arguments() -> None:
    assert (
        parse_time("2026-11-23", "since")
        == T0
        == parse_time("2026-11-23T00:00:00Z", "since")
        == parse_time(str(T0), "since")
    )


def test_the_command_writes_json_markdown_and_png(candidate_dir: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    records, _ = month()
    audit = tmp_path / "audit.jsonl"
    audit.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    args = ["backtest", "--rules", str(candidate_dir), "--file", str(audit), "--since", "2026-11-23",
            "--until", "2026-11-26", "--format", "json", "--out", str(tmp_path / "out")]  # fmt: skip
    assert main(args) == 0
    printed = orjson.loads(capsys.readouterr().out)
    assert printed["rules"]["pin_bruteforce"]["new"]["fires"] == 18
    assert orjson.loads((tmp_path / "out" / "backtest.json").read_bytes()) == printed
    assert "| pin_bruteforce | 9 | 18 |" in (tmp_path / "out" / "backtest.md").read_text()


def test_a_backtest_of_one_channel(candidate_dir: Path) -> None:
    records, _ = month()
    rules, _ = candidate_rules(SETTINGS, candidate_dir)
    request = Request(candidate_dir, since=T0, until=T0 + 3 * DAY, channels=("atm",))
    report = backtest(records, (), Candidate(rules), request, {})
    assert list(report["verdicts"]["by_channel"]) == ["atm"] and report["records"]["re_decided"] == 30
    assert report["records"]["skipped"]["other_channel"] == 27 + 15  # logins, and the reports (mobile)
    assert report["labels"]["fraud"] == 6  # the reports still label the ATM events
