"""Card payments with a planted fraud signal, and the fraud label stream a bank produces.

Used by tests/integration/test_fraud_labels.py (through the trainer and Redis) and, run
as a script, to compare fraud model designs in-process on the same stream::

    .venv/bin/python -m tests.fraudsim            # the tables in README "Fraud labels"
    .venv/bin/python -m tests.fraudsim 0.01       # ... at 1% fraud
    .venv/bin/python -m tests.fraudsim --delays   # ... reports sooner or later than maturity

The payments: ``customers`` card holders, each with a typical amount; most have few
payments, so many are decided with no history (``amount_ratio_30d`` 0, the unsupervised
baseline a constant). Frauds are a fixed share; some of their signals are ones the
baseline weighs (new device, night, terminal change, amount against the customer's
average), others only labels can teach (a device shared by many customers, a recent
password reset, distance from home, a burst of payments). Deterministic for a seed.
"""

from __future__ import annotations

import math
import random
import statistics
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from models.features import FRAUD_FEATURES
from models.quality import ProgressiveQuality

GAP_S = 10.0  # seconds between payments


@dataclass(frozen=True)
class Payment:
    i: int
    ts: float
    customer: str
    channel: str
    fraud: bool
    features: dict[str, Any]


def payments(n: int = 5000, fraud_rate: float = 0.04, seed: int = 7, customers: int = 1500,
             t0: float = 1_790_000_000.0) -> list[Payment]:  # fmt: skip
    rng = random.Random(seed)
    typical = [rng.lognormvariate(3.5, 0.8) for _ in range(customers)]
    seen = [0] * customers
    out = []
    for i in range(n):
        c = rng.randrange(customers)
        fraud = rng.random() < fraud_rate
        out.append(_payment(rng, i, t0 + i * GAP_S, c, typical[c], seen[c], fraud))
        seen[c] += 1
    return out


def _payment(
    rng: random.Random, i: int, ts: float, c: int, typical: float, seen: int, fraud: bool
) -> Payment:
    def flag(p_fraud: float, p_legit: float) -> float:
        return float(rng.random() < (p_fraud if fraud else p_legit))

    amount = typical * rng.lognormvariate(0.0, 0.5) * (rng.choice((1.0, 1.0, 3.0, 8.0)) if fraud else 1.0)
    channel = rng.choice(("internet", "mobile")) if fraud else rng.choice(("internet", "mobile", "atm"))
    f: dict[str, Any] = {
        "log_amount": math.log1p(amount),
        "amount_ratio_30d": amount / typical if seen >= 2 else 0.0,
        "new_device": flag(0.30, 0.03),
        "known_devices": float(rng.randint(1, 3)),
        "night": flag(0.30, 0.08),
        "terminal_changed": flag(0.40, 0.20),
        "channel_switch": flag(0.25, 0.10),
        "n_10m": float(rng.randint(0, 4) if fraud else rng.choice((0, 0, 0, 1))),
        "n_1h": float(rng.randint(1, 8) if fraud else rng.randint(0, 3)),
        "seconds_since_last": rng.uniform(10, 600) if fraud and rng.random() < 0.5 else rng.uniform(600, 6e5),
        "device_customers_24h": float(rng.randint(1, 6) if fraud else (2 if rng.random() < 0.05 else 1)),
        "secs_since_password_reset": (
            rng.uniform(60, 3600) if fraud and rng.random() < 0.3
            else (-1.0 if rng.random() < 0.85 else rng.uniform(1e4, 1e6))
        ),
        "home_distance_km": rng.uniform(50, 2000) if fraud and rng.random() < 0.5 else rng.expovariate(0.2),
        "channel": channel,
        "type": "card_payment",
        "kyc_risk": rng.choice(("low", "low", "medium", "high") if fraud else ("low", "low", "low", "medium")),
    }  # fmt: skip
    return Payment(i, ts, f"cust{c}", channel, fraud, f)


@dataclass
class Replay:
    """What the channels would have received: decision-time scores, and per block of
    ``block`` payments the median score of the legitimate ones."""

    quality: ProgressiveQuality
    legit_medians: list[float] = field(default_factory=list)
    mean_score: float = 0.0
    corrections: int = 0


def label_stream(
    data: list[Payment], report_after: int, maturity_s: float
) -> Iterator[tuple[float, str, Payment]]:
    """(due time, "fraud" | "legit", payment) in time order: each fraud reported
    ``report_after`` payments later; every payment matures as legitimate after ``maturity_s``."""
    due = [(p.ts + report_after * GAP_S, 0, "fraud", p) for p in data if p.fraud]
    due += [(p.ts + maturity_s, 1, "legit", p) for p in data]
    for t, _, kind, p in sorted(due, key=lambda d: (d[0], d[1], d[3].i)):
        yield t, kind, p


def replay(model: Any, data: list[Payment], report_after: int = 1000, maturity_s: float = 7200.0,
           correct: bool = True, block: int = 500) -> Replay:  # fmt: skip
    """Score each payment with the current model, then learn the labels due by then, as
    the trainer does: a matured payment as a provisional negative, a report as a positive
    (taking the negative back first when ``correct`` and it had matured)."""
    out = Replay(ProgressiveQuality(window=len(data) + 1))
    labels = label_stream(data, report_after, maturity_s)
    pending = next(labels, None)
    learned: dict[int, bool] = {}
    scores = []
    legit_block: list[float] = []
    for p in data:
        while pending is not None and pending[0] <= p.ts:
            _, kind, q = pending
            _learn(model, q, kind, learned, correct, out)
            pending = next(labels, None)
        s = float(model.predict_proba_one(FRAUD_FEATURES.extract(p.features, {}))[True])
        out.quality.record(p.fraud, s)
        scores.append(s)
        if not p.fraud:
            legit_block.append(s)
        if (p.i + 1) % block == 0:
            out.legit_medians.append(statistics.median(legit_block))
            legit_block = []
    out.mean_score = statistics.fmean(scores)
    return out


def _learn(model: Any, p: Payment, kind: str, learned: dict[int, bool], correct: bool, out: Replay) -> None:
    x = FRAUD_FEATURES.extract(p.features, {})
    if kind == "legit":
        if p.i not in learned:
            model.learn_one(x, False)
            learned[p.i] = False
        return
    if learned.get(p.i) is False and correct:
        model.learn_one(x, False, w=-1.0)
        out.corrections += 1
    model.learn_one(x, True)
    learned[p.i] = True


class OldBlend:
    """FraudRisk as it was before 2026-12-04 (for the comparison): an OnlineLogit with
    positives weighted 30 and no calibration, blended with the baseline by positives."""

    def __init__(self, positive_weight: float = 30.0) -> None:
        from models.online import _head, _Inputs

        self.inputs = _Inputs(FRAUD_FEATURES.numeric_inputs, FRAUD_FEATURES.categorical_inputs)
        self.head = _head(0.05)
        self.pw = positive_weight
        self.n_labels = self.n_positive = 0

    def predict_proba_one(self, x: dict[str, Any]) -> dict[bool, float]:
        from engine.domain.scoring import MODEL_FRAUD_WEIGHTS, fraud_baseline

        anomaly = fraud_baseline(x, MODEL_FRAUD_WEIGHTS)
        if self.n_positive == 0:
            return {False: 1.0 - anomaly, True: anomaly}
        own = float(self.head.predict_proba_one(self.inputs.transform(x))[True])
        trust = self.n_labels / (self.n_labels + 20.0)
        sup = trust * own + (1.0 - trust) * 0.002
        w = self.n_positive / (self.n_positive + 30.0)
        p = w * sup + (1.0 - w) * anomaly
        return {False: 1.0 - p, True: p}

    def learn_one(self, x: dict[str, Any], y: bool, w: float = 1.0) -> None:
        if w > 0:
            self.inputs.learn(x)
        self.head.learn_one(self.inputs.transform(x), y, w=(self.pw if y else 1.0) * w)
        step = 1 if w > 0 else -1
        self.n_labels += step
        self.n_positive += step * int(y)


def designs() -> dict[str, Callable[[], Any]]:
    from models.online import FraudRisk, OnlineLogit

    num, cat = FRAUD_FEATURES.numeric_inputs, FRAUD_FEATURES.categorical_inputs
    out: dict[str, Callable[[], Any]] = {"old: blend, weight 30, lr 0.05": OldBlend}
    for pw, lr in ((30.0, 0.05), (5.0, 0.05), (5.0, 0.01), (1.0, 0.01)):
        out[f"supervised only, weight {pw:g}, lr {lr:g}"] = lambda pw=pw, lr=lr: OnlineLogit(
            num, cat, prior=0.002, lr=lr, positive_weight=pw
        )
    for pw, lr in ((30.0, 0.01), (5.0, 0.05), (5.0, 0.01), (2.0, 0.01), (1.0, 0.01)):
        out[f"baseline as input, weight {pw:g}, lr {lr:g}"] = lambda pw=pw, lr=lr: FraudRisk(
            num, cat, positive_weight=pw, lr=lr
        )
    return out


def compare(seeds: tuple[int, ...] = (7, 8, 9), fraud_rate: float = 0.04) -> str:
    """The comparison table (mean over seeds): decision-time PR AUC / ROC AUC, the
    median legitimate score in the last block and its highest over blocks, the mean
    score against the fraud rate, under 30-day maturity (old rule) and 2 h + corrections."""
    rows = ["| design | label rule | PR AUC | ROC AUC | legit median, last / max | mean score |",
            "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for name, factory in designs().items():
        for rule, maturity in (("30 d", 30 * 86400.0), ("2 h", 7200.0)):
            runs = [
                replay(factory(), payments(seed=s, fraud_rate=fraud_rate), maturity_s=maturity) for s in seeds
            ]
            pr = statistics.fmean(r.quality.pr_auc() or 0.0 for r in runs)
            roc = statistics.fmean(r.quality.roc_auc() or 0.0 for r in runs)
            last = statistics.fmean(r.legit_medians[-1] for r in runs)
            top = max(max(r.legit_medians) for r in runs)
            mean = statistics.fmean(r.mean_score for r in runs)
            rows.append(f"| {name} | {rule} | {pr:.3f} | {roc:.3f} | {last:.4f} / {top:.4f} | {mean:.4f} |")
    return "\n".join(rows)


def delays(seeds: tuple[int, ...] = (7, 8, 9), fraud_rate: float = 0.04) -> str:
    """The chosen design against the old one when reports come sooner or later than the
    2 h maturity (300, 1,000, 3,000 payments: 50 min, 2.8 h, 8.3 h)."""
    from models.registry import build

    rows = [
        "| design | report delay | PR AUC | ROC AUC | legit median, highest |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, factory in (("before: blend", OldBlend), ("now", lambda: build("fraud"))):
        for after in (300, 1000, 3000):
            runs = [
                replay(factory(), payments(seed=s, fraud_rate=fraud_rate), report_after=after) for s in seeds
            ]
            pr = statistics.fmean(r.quality.pr_auc() or 0.0 for r in runs)
            roc = statistics.fmean(r.quality.roc_auc() or 0.0 for r in runs)
            top = max(max(r.legit_medians) for r in runs)
            rows.append(f"| {name} | {after * GAP_S / 3600:.1f} h | {pr:.3f} | {roc:.3f} | {top:.4f} |")
    return "\n".join(rows)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--delays"]
    rate = float(args[0]) if args else 0.04
    if "--delays" in sys.argv:
        print(f"5,000 card payments, {rate:.0%} fraud, maturity 2 h, seeds 7-9")
        print(delays(fraud_rate=rate))
    else:
        print(f"5,000 card payments, {rate:.0%} fraud, reports 1,000 payments (10,000 s) later, seeds 7-9")
        print(compare(fraud_rate=rate))
