"""Model designs compared on real data, in-process: how the defaults were chosen.

``loadtest.modelbench`` measures Beacon through its API; this runs Beacon's own model
classes (``models/online.py``) directly on the same rows of the same public data sets
(``loadtest/modeldata.py``) under the same label rules, so a design choice (positive
weight, learning rate, the unsupervised baseline as an input or as a blend) is judged
on real data in seconds, without the plumbing. River used directly is the reference.

- fraud: each payment is scored, then a fraud is reported ``--label-delay`` rows later
  and every payment matures as a provisional negative ``--maturity-rows`` rows later (a
  report after that corrects it), as the trainer does (engine/service/trainer.py).
- offers: each contact is scored, then its answer learned ``--label-delay`` rows later.

    .venv/bin/python -m loadtest.modelgrid --data fraud --rows 20000
    .venv/bin/python -m loadtest.modelgrid --data caravan --rows 6000 --label-delay 200

>>> xs = [{"attr_a": float(i % 2), "log_amount": 1.0} for i in range(400)]
>>> ys = [i % 2 == 1 for i in range(400)]
>>> s = fraud_replay(lambda: _fraud("now")(("attr_a", "log_amount")), xs, ys, delay=20, maturity=40)
>>> round(roc_auc(ys[200:], s[200:]), 2)
1.0
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from loadtest import modeldata
from loadtest.modeleval import average_precision, recall_at_top, river_direct, roc_auc

Factory = Callable[[tuple[str, ...]], Any]


def _fraud(design: str, weight: float = 5.0, lr: float = 0.01) -> Factory:
    from models.online import FraudRisk, OnlineLogit

    if design == "now":
        return lambda num: FraudRisk(num, (), positive_weight=weight, lr=lr)
    if design == "supervised":
        return lambda num: OnlineLogit(num, (), prior=0.002, lr=lr, positive_weight=weight)
    if design == "old":
        from tests.fraudsim import OldBlend

        return lambda num: _OnInputs(OldBlend(weight), num)
    raise ValueError(design)


class _OnInputs:
    """The old blend reads the built-in fraud inputs; give it the data set's instead."""

    def __init__(self, model: Any, numeric: tuple[str, ...]) -> None:
        from models.online import _Inputs

        model.inputs = _Inputs(numeric, ())
        self.model = model

    def predict_proba_one(self, x: dict[str, Any]) -> dict[bool, float]:
        return self.model.predict_proba_one(x)  # type: ignore[no-any-return]

    def learn_one(self, x: dict[str, Any], y: bool, w: float = 1.0) -> None:
        self.model.learn_one(x, y, w)


def fraud_replay(
    make: Callable[[], Any], xs: Sequence[dict[str, Any]], ys: Sequence[bool], delay: int, maturity: int
) -> list[float]:
    """Scores at decision time: reports ``delay`` rows later, provisional negatives
    ``maturity`` rows later, a report after maturity taking the negative back first."""
    model, out = make(), []
    learned: dict[int, bool] = {}
    for i, x in enumerate(xs):
        matured, reported = i - maturity, i - delay
        if matured >= 0 and matured not in learned:
            model.learn_one(xs[matured], False)
            learned[matured] = False
        if reported >= 0 and ys[reported]:
            if learned.get(reported) is False:
                model.learn_one(xs[reported], False, w=-1.0)
            model.learn_one(xs[reported], True)
            learned[reported] = True
        out.append(float(model.predict_proba_one(x)[True]))
        _observe(model, x)
    return out


def _observe(model: Any, x: dict[str, Any]) -> None:
    """What the trainer does with every decision it sees: fit the inputs' scaling."""
    observe = getattr(model, "observe_one", None)
    if observe is not None:
        observe(x)


def offer_replay(
    make: Callable[[], Any], xs: Sequence[dict[str, Any]], ys: Sequence[bool], delay: int
) -> list[float]:
    model, out = make(), []
    for i, x in enumerate(xs):
        if i - delay >= 0:
            model.learn_one({**xs[i - delay], "offer": "o"}, ys[i - delay])
        out.append(model.predict_offers(x, ("o",))["o"])
        _observe(model, x)
    return out


def _log_amount(amount: float | None) -> float:
    return math.log1p(max(amount or 0.0, 0.0))  # a credit balance (negative) is no amount


def _row(name: str, ys: Sequence[bool], scores: Sequence[float], seconds: float) -> str:
    pr, roc = average_precision(ys, scores), roc_auc(ys, scores)
    return f"| {name} | {pr:.3f} | {roc:.3f} | {recall_at_top(ys, scores):.3f} | {seconds:.1f} |"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="fraud", choices=sorted(modeldata.DATASETS))
    p.add_argument("--rows", type=int, default=20000)
    p.add_argument("--label-delay", type=int, default=1000)
    p.add_argument("--maturity-rows", type=int, default=4800, help="fraud: ~2 h of this data set's rows")
    args = p.parse_args(argv)
    ds = modeldata.DATASETS[args.data]
    rows = modeldata.load(args.data, args.rows)
    ys = [r.label for r in rows]
    xs = [
        {**{"attr_" + k: v for k, v in r.features.items()}, "log_amount": _log_amount(r.amount)} for r in rows
    ]
    num = tuple(xs[0])
    print(f"{args.data}: {len(rows)} rows, {sum(ys)} positives, label delay {args.label_delay}")
    print("| design | PR AUC | ROC AUC | recall top 0.1% | seconds |\n| --- | --- | --- | --- | --- |")
    started = time.perf_counter()
    direct = river_direct([r.features for r in rows], ys, args.label_delay, ds.kind)
    print(_row("River direct (every label, no maturity)", ys, direct, time.perf_counter() - started))
    if ds.kind == "fraud":
        designs = [("old: blend, weight 30, lr 0.05", _fraud("old", 30.0))]
        designs += [(f"supervised only, weight {w:g}, lr {lr:g}", _fraud("supervised", w, lr))
                    for w, lr in ((30.0, 0.05), (5.0, 0.01))]  # fmt: skip
        grid = ((30.0, 0.01), (5.0, 0.05), (5.0, 0.01), (2.0, 0.01), (1.0, 0.01))
        designs += [(f"baseline as input, weight {w:g}, lr {lr:g}", _fraud("now", w, lr)) for w, lr in grid]
        for name, factory in designs:
            started = time.perf_counter()
            s = fraud_replay(lambda f=factory: f(num), xs, ys, args.label_delay, args.maturity_rows)  # type: ignore[misc]
            print(_row(name, ys, s, time.perf_counter() - started))
        return
    from models.online import OfferPropensity

    for lr in (0.1, 0.05, 0.02, 0.01, 0.005):
        started = time.perf_counter()
        s = offer_replay(lambda lr=lr: OfferPropensity(num, (), lr=lr), xs, ys, args.label_delay)  # type: ignore[misc]
        print(_row(f"offer head, lr {lr:g}", ys, s, time.perf_counter() - started))


if __name__ == "__main__":
    main()
