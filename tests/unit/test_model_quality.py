"""Progressive quality: exact AUCs cross-checked by brute force, calibration, label delay,
the bounded window, the Prometheus exporter and the human report."""

from __future__ import annotations

import json
import math
import pickle
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from models.quality import ProgressiveQuality, QualityMetrics
from models.report import render_report

# Scores from a small grid force ties; free floats give (mostly) distinct scores.
grid_scores = st.integers(0, 10).map(lambda i: i / 10)
free_scores = st.floats(0.0, 1.0, allow_nan=False)
pairs = st.lists(st.tuples(st.booleans(), grid_scores | free_scores), min_size=1, max_size=60)


def quality_of(data: list[tuple[bool, float]], window: int = 5000) -> ProgressiveQuality:
    q = ProgressiveQuality(window=window)
    for y, p in data:
        q.record(y, p)
    return q


def brute_roc_auc(data: list[tuple[bool, float]]) -> float | None:
    """Every (positive, negative) pair: 1 if the positive scores higher, 1/2 on a tie."""
    pos = [p for y, p in data if y]
    neg = [p for y, p in data if not y]
    if not pos or not neg:
        return None
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def brute_average_precision(data: list[tuple[bool, float]]) -> float | None:
    """sklearn's step-wise AP: for each distinct threshold t, predict positive when score >= t."""
    total_pos = sum(y for y, _ in data)
    if not total_pos:
        return None
    ap, last_recall = 0.0, 0.0
    for t in sorted({p for _, p in data}, reverse=True):
        tp = sum(1 for y, p in data if y and p >= t)
        fp = sum(1 for y, p in data if not y and p >= t)
        recall = tp / total_pos
        ap += (recall - last_recall) * (tp / (tp + fp))
        last_recall = recall
    return ap


def mean_precision_at_hits(data: list[tuple[bool, float]]) -> float:
    """With distinct scores, AP is the mean over positives of precision at the positive's rank."""
    ranked = sorted(data, key=lambda pair: -pair[1])
    hits, total = 0, 0.0
    for rank, (y, _) in enumerate(ranked, start=1):
        if y:
            hits += 1
            total += hits / rank
    return total / hits


# -- ranking ------------------------------------------------------------------------------


def test_known_values_from_the_sklearn_documentation() -> None:
    q = quality_of([(False, 0.1), (False, 0.4), (True, 0.35), (True, 0.8)])
    assert q.roc_auc() == 0.75
    assert q.pr_auc() == pytest.approx(0.8333333333333333, abs=1e-15)


@settings(max_examples=300, deadline=None)
@given(pairs)
def test_roc_auc_is_exactly_the_pairwise_probability(data: list[tuple[bool, float]]) -> None:
    expected = brute_roc_auc(data)
    got = quality_of(data).roc_auc()
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected, abs=1e-12)


@settings(max_examples=300, deadline=None)
@given(pairs)
def test_pr_auc_is_exactly_stepwise_average_precision(data: list[tuple[bool, float]]) -> None:
    expected = brute_average_precision(data)
    got = quality_of(data).pr_auc()
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected, abs=1e-12)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), free_scores), min_size=1, max_size=60, unique_by=lambda t: t[1]))
def test_pr_auc_without_ties_is_mean_precision_at_each_positive(data: list[tuple[bool, float]]) -> None:
    if not any(y for y, _ in data):
        return
    assert quality_of(data).pr_auc() == pytest.approx(mean_precision_at_hits(data), abs=1e-12)


def test_auc_on_a_larger_random_window_matches_brute_force() -> None:
    rng = random.Random(7)
    data = [(rng.random() < 0.05, round(rng.random(), 3)) for _ in range(2000)]  # rare target, many ties
    q = quality_of(data)
    assert q.roc_auc() == pytest.approx(brute_roc_auc(data), abs=1e-12)
    assert q.pr_auc() == pytest.approx(brute_average_precision(data), abs=1e-12)


def test_ranking_extremes() -> None:
    perfect = [(True, 0.9), (True, 0.8), (False, 0.2), (False, 0.1)]
    assert quality_of(perfect).roc_auc() == 1.0
    assert quality_of(perfect).pr_auc() == 1.0
    reversed_ = [(not y, p) for y, p in perfect]
    assert quality_of(reversed_).roc_auc() == 0.0
    all_tied = [(True, 0.3), (False, 0.3), (False, 0.3), (False, 0.3)]
    assert quality_of(all_tied).roc_auc() == 0.5
    assert quality_of(all_tied).pr_auc() == 0.25  # one threshold: precision = base rate


def test_undefined_without_both_classes() -> None:
    assert quality_of([]).roc_auc() is None and quality_of([]).pr_auc() is None
    negatives = quality_of([(False, 0.1), (False, 0.7)])
    assert negatives.roc_auc() is None and negatives.pr_auc() is None
    positives = quality_of([(True, 0.1), (True, 0.7)])
    assert positives.roc_auc() is None
    assert positives.pr_auc() == 1.0  # sklearn's definition: precision is 1 at every threshold


# -- window and lifetime counts -----------------------------------------------------------


def test_the_window_is_bounded_and_metrics_describe_only_it() -> None:
    q = ProgressiveQuality(window=100)
    for i in range(900):  # a terrible start: positives score low
        q.record(i % 2 == 0, 0.1 if i % 2 == 0 else 0.9, delay_s=1000.0)
    for i in range(100):  # then perfect ranking, fast labels
        q.record(i % 4 == 0, 0.9 if i % 4 == 0 else 0.1, delay_s=10.0)
    assert len(q) == 100
    assert len(q._pairs) == 100 and len(q._delays) == 100
    assert q.labels == 1000 and q.positives == 450 + 25
    assert q.roc_auc() == 1.0 and q.pr_auc() == 1.0
    assert q.base_rate() == 0.25
    s = q.summary()
    assert s["n"] == 100 and s["window_positives"] == 25 and s["labels"] == 1000
    assert s["label_delay_s"]["p50"] == 10.0 and s["label_delay_s"]["p90"] == 10.0
    assert s["label_delay_s"]["mean"] == pytest.approx((900 * 1000.0 + 100 * 10.0) / 1000)  # lifetime


def test_window_must_be_positive() -> None:
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="window"):
            ProgressiveQuality(window=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [-0.01, 1.01, math.nan, math.inf])
def test_a_score_that_is_not_a_probability_is_refused(bad: float) -> None:
    q = ProgressiveQuality()
    with pytest.raises(ValueError, match="probability"):
        q.record(True, bad)
    assert q.labels == 0 and len(q) == 0


# -- calibration and loss -----------------------------------------------------------------


def test_calibration_of_a_calibrated_model_is_close() -> None:
    rng = random.Random(11)
    q = ProgressiveQuality(window=20000)
    for _ in range(20000):
        p = rng.random()
        q.record(rng.random() < p, p)
    rows = q.calibration(bins=10)
    assert [row["bin"] for row in rows] == list(range(10))
    assert sum(row["n"] for row in rows) == 20000
    for row in rows:
        assert row["lo"] <= row["mean_p"] < row["hi"]
        assert abs(row["rate"] - row["mean_p"]) < 0.05
    ece = q.ece()
    assert ece is not None and ece < 0.02


def test_calibration_of_an_overconfident_model() -> None:
    q = quality_of([(False, 0.8)] * 30 + [(True, 0.8)] * 10 + [(False, 0.05)] * 60)
    rows = q.calibration(bins=10)
    assert [(r["bin"], r["n"], r["rate"]) for r in rows] == [(0, 60, 0.0), (8, 40, 0.25)]
    # 60 x |0.05 - 0| + 40 x |0.8 - 0.25|, over 100
    assert q.ece() == pytest.approx((60 * 0.05 + 40 * 0.55) / 100)


def test_calibration_bin_edges() -> None:
    q = quality_of([(True, 1.0), (False, 0.0), (False, 0.5)])
    assert [(r["bin"], r["n"]) for r in q.calibration(bins=2)] == [(0, 1), (1, 2)]  # 1.0 in the last bin
    assert [(r["bin"], r["n"]) for r in q.calibration(bins=1)] == [(0, 3)]
    with pytest.raises(ValueError, match="bins"):
        q.calibration(bins=0)


def test_log_loss() -> None:
    assert quality_of([(True, 0.5), (False, 0.5)]).log_loss() == pytest.approx(math.log(2))
    q = quality_of([(True, 0.9), (False, 0.2)])
    assert q.log_loss() == pytest.approx(-(math.log(0.9) + math.log(0.8)) / 2)
    confident_mistake = quality_of([(True, 0.0)]).log_loss()
    assert confident_mistake is not None and math.isfinite(confident_mistake)
    assert confident_mistake == pytest.approx(-math.log(1e-15))
    assert quality_of([]).log_loss() is None and quality_of([]).ece() is None


# -- label delay --------------------------------------------------------------------------


def test_label_delay_quantiles_interpolate() -> None:
    q = ProgressiveQuality()
    for d in range(1, 101):
        q.record(False, 0.1, delay_s=float(d))
    delay = q.label_delay()
    assert delay == {"mean": 50.5, "p50": 50.5, "p90": pytest.approx(90.1)}


def test_unknown_delays_are_left_out_and_negative_ones_count_as_zero() -> None:
    q = ProgressiveQuality()
    q.record(True, 0.5)
    assert q.label_delay() == {"mean": None, "p50": None, "p90": None}
    q.record(True, 0.5, delay_s=-3.0)  # clock skew
    q.record(True, 0.5, delay_s=30.0)
    assert q.label_delay() == {"mean": 15.0, "p50": 15.0, "p90": pytest.approx(27.0)}
    with pytest.raises(ValueError, match="delay_s"):
        q.record(True, 0.5, delay_s=math.nan)


# -- summary and pickling -----------------------------------------------------------------


def test_summary_is_json_without_nan() -> None:
    rng = random.Random(3)
    q = ProgressiveQuality(window=500)
    for _ in range(800):
        q.record(rng.random() < 0.1, rng.random(), delay_s=rng.expovariate(1 / 3600))
    s = q.summary()
    assert json.loads(json.dumps(s, allow_nan=False)) == s
    assert set(s) == {
        "window", "n", "labels", "positives", "window_positives", "base_rate", "mean_p",
        "roc_auc", "pr_auc", "log_loss", "ece", "calibration", "label_delay_s",
    }  # fmt: skip
    assert s["roc_auc"] == q.roc_auc() and s["pr_auc"] == q.pr_auc() and s["ece"] == q.ece()
    empty = ProgressiveQuality().summary()
    assert json.loads(json.dumps(empty, allow_nan=False)) == empty
    assert empty["base_rate"] is None and empty["calibration"] == []


def test_pickle_round_trip_keeps_the_window_and_its_bound() -> None:
    q = ProgressiveQuality(window=5)
    for i in range(8):
        q.record(i % 3 == 0, i / 10, delay_s=float(i))
    clone = pickle.loads(pickle.dumps(q))
    assert clone.summary() == q.summary()
    for _ in range(4):
        q.record(True, 0.95, delay_s=1.0)
        clone.record(True, 0.95, delay_s=1.0)
    assert len(clone) == 5 and clone.summary() == q.summary()


# -- Prometheus ---------------------------------------------------------------------------


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_metrics_export_a_summary() -> None:
    registry = CollectorRegistry()
    metrics = QualityMetrics(registry)
    q = quality_of([(False, 0.1), (False, 0.4), (True, 0.35), (True, 0.8)])
    q.record(False, 0.2, delay_s=60.0)
    metrics.update("fraud", q.summary())
    assert sample(registry, "beacon_model_roc_auc", model="fraud") == q.roc_auc()
    assert sample(registry, "beacon_model_pr_auc", model="fraud") == q.pr_auc()
    assert sample(registry, "beacon_model_calibration_error", model="fraud") == q.ece()
    assert sample(registry, "beacon_model_log_loss", model="fraud") == q.log_loss()
    assert sample(registry, "beacon_model_base_rate", model="fraud") == 0.4
    assert sample(registry, "beacon_model_label_delay_seconds", model="fraud", quantile="0.5") == 60.0
    assert sample(registry, "beacon_model_label_delay_seconds", model="fraud", quantile="0.9") == 60.0
    assert sample(registry, "beacon_model_labels_total", model="fraud") == 5
    assert sample(registry, "beacon_model_positive_labels_total", model="fraud") == 2


def test_undefined_values_remove_the_series_instead_of_exporting_nan() -> None:
    registry = CollectorRegistry()
    metrics = QualityMetrics(registry)
    metrics.update("churn", quality_of([(True, 0.2), (False, 0.1)]).summary())
    assert sample(registry, "beacon_model_roc_auc", model="churn") == 1.0
    metrics.update("churn", quality_of([(False, 0.1)]).summary())
    assert sample(registry, "beacon_model_roc_auc", model="churn") is None
    assert sample(registry, "beacon_model_pr_auc", model="churn") is None
    assert sample(registry, "beacon_model_label_delay_seconds", model="churn", quantile="0.5") is None
    assert b"NaN" not in generate_latest(registry)


def test_label_counters_follow_the_model_and_reset_when_it_is_replaced() -> None:
    registry = CollectorRegistry()
    metrics = QualityMetrics(registry)
    metrics.update("offer", {"labels": 10, "positives": 2})
    metrics.update("offer", {"labels": 25, "positives": 3})
    assert sample(registry, "beacon_model_labels_total", model="offer") == 25
    metrics.update("offer", {"labels": 25})  # positives missing: unchanged
    assert sample(registry, "beacon_model_positive_labels_total", model="offer") == 3
    metrics.update("offer", {"labels": 4, "positives": 1})  # a new model object
    assert sample(registry, "beacon_model_labels_total", model="offer") == 4
    assert sample(registry, "beacon_model_positive_labels_total", model="offer") == 1


def test_model_label_values_are_bounded() -> None:
    metrics = QualityMetrics(CollectorRegistry(), max_models=2)
    metrics.update("fraud", {})
    metrics.update("churn", {})
    with pytest.raises(ValueError, match="already exporting quality for 2 models"):
        metrics.update("offer", {})
    metrics.forget("churn")
    assert sample(metrics.registry, "beacon_model_labels_total", model="churn") is None
    metrics.update("offer", {})
    assert metrics.models == ("fraud", "offer")
    for bad in ("", "customer 42", "x" * 65, "9lives"):
        with pytest.raises(ValueError, match="not a valid metric label"):
            QualityMetrics(CollectorRegistry()).update(bad, {})


# -- report -------------------------------------------------------------------------------


def test_report_table() -> None:
    fraud = ProgressiveQuality()
    for y, p, d in [(False, 0.1, 30.0), (False, 0.4, 90.0), (True, 0.35, 7200.0), (True, 0.8, 200000.0)]:
        fraud.record(y, p, delay_s=d)
    churn = quality_of([(False, 0.1)] * 1500)
    report = render_report(
        {"fraud": fraud.summary(), "churn": churn.summary(), "offer": ProgressiveQuality().summary()},
        min_positives=2,  # the default (30) would say "too few positives" for fraud
    )
    lines = report.splitlines()
    assert lines[0].split("  ")[0] == "model" and "ROC AUC" in lines[0] and "delay p90" in lines[0]
    assert lines[1].startswith("churn  1,500") and "n/a (needs both classes)" in lines[1]
    assert "n/a (needs a positive)" in lines[1]
    assert lines[2].startswith("fraud") and "0.750" in lines[2] and "0.833" in lines[2]
    # delays 30 s, 90 s, 7200 s, 200000 s: p50 = 3645 s, p90 = 7200 + 0.7 x 192800 = 142160 s
    assert lines[2].split()[-2:] == ["1.0h", "1.6d"]
    assert lines[3].startswith("offer") and lines[3].count("n/a") >= 6
    assert "lifetime" in report  # the footer says what the columns describe
    column = lines[0].index("ROC AUC")
    assert all(line[column - 2 : column] == "  " for line in lines[:4])  # aligned columns


def test_report_of_nothing() -> None:
    assert "no models" in render_report({})


def test_a_window_with_one_fraud_is_too_few_positives_to_measure() -> None:
    """Issue 15 item 9: one fraud among 4,999 legitimate payments read ROC and PR AUC
    1.000 / 1.000; the report now says there is too little to measure."""
    fraud = quality_of([(False, 0.1)] * 4999 + [(True, 0.9)])
    report = render_report({"fraud": fraud.summary()})
    row = report.splitlines()[1]
    assert "1.000" not in row and "too few positives to measure (1 < 30)" in row
    plenty = quality_of([(False, 0.1)] * 500 + [(True, 0.9)] * 30)
    assert render_report({"fraud": plenty.summary()}).splitlines()[1].split()[5:7] == ["1.000", "1.000"]
