"""The check suite every registered model passes, as plain functions for tests.

Models follow River's protocol: ``predict_proba_one(x) -> {False: p0, True: p1}`` and
``learn_one(x, y)``. Each check raises ``AssertionError`` (explicitly, so ``python -O``
does not skip it) with a message naming the check, the model and the offending sample.

>>> from river import compose, linear_model, preprocessing
>>> def fraud_model():
...     return (compose.Select("amount", "n_1h") | preprocessing.StandardScaler()
...             | linear_model.LogisticRegression(intercept_init=-4.0))
>>> samples = [({"amount": float(a), "n_1h": float(a % 5)}, a % 7 == 0) for a in range(40)]
>>> run_all(fraud_model, samples)
['sane_prior', 'input_not_mutated', 'learns', 'pickle_round_trip', 'pickle_round_trip_fresh']

A bare River ``LogisticRegression`` starts at 0.5, which is no prior for a rare target:

>>> check_sane_prior(linear_model.LogisticRegression(), {"amount": 1.0})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
AssertionError: check_sane_prior: LogisticRegression: a fresh model predicts P(True) = 0.5, outside ...
"""

from __future__ import annotations

import copy
import math
import pickle
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

__all__ = [
    "Classifier",
    "check_input_not_mutated",
    "check_learns",
    "check_pickle_round_trip",
    "check_sane_prior",
    "run_all",
]


class Classifier(Protocol):
    """River's binary classifier protocol, as far as Beacon uses it."""

    def predict_proba_one(self, x: dict[str, Any]) -> dict[Any, float]: ...

    def learn_one(self, x: dict[str, Any], y: bool) -> Any: ...


Sample = Mapping[str, Any]
Labelled = tuple[Sample, bool]


def check_pickle_round_trip(model: Classifier, samples: Sequence[Sample]) -> None:
    """A pickled and unpickled copy predicts what the original does, to 1e-12.

    Not bit for bit: River transformers keep some state in sets, and a set's order (so
    the order of a floating-point sum) depends on the process's string hash seed; the
    last bit may differ. Anything a snapshot could really lose shows up far above 1e-12."""
    if not samples:
        raise ValueError("check_pickle_round_trip needs at least one sample to compare predictions on")
    name = _name(model)
    try:
        clone = pickle.loads(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception as exc:  # any failure to pickle is the finding
        raise AssertionError(f"check_pickle_round_trip: {name}: pickling failed: {exc!r}") from exc
    if type(clone) is not type(model):
        raise AssertionError(
            f"check_pickle_round_trip: {name}: unpickled as {type(clone).__qualname__}, "
            f"not {type(model).__qualname__}"
        )
    for i, x in enumerate(samples):
        # The same order of calls on both, so a model whose predict updates state still agrees.
        original = _predict("check_pickle_round_trip", name, model, dict(x), i)
        copied = _predict("check_pickle_round_trip", name + " (unpickled)", clone, dict(x), i)
        if set(original) != set(copied) or any(abs(original[k] - copied[k]) > 1e-12 for k in original):
            raise AssertionError(
                f"check_pickle_round_trip: {name}: sample {i} {dict(x)!r}: the original predicts "
                f"{original!r}, the unpickled copy {copied!r}"
            )


def check_input_not_mutated(
    model: Classifier, samples: Sequence[Sample], labels: Sequence[bool] | None = None
) -> None:
    """Neither ``predict_proba_one`` nor ``learn_one`` changes the dict it is given.

    Without ``labels`` the samples are learned as False, True, False, ... so both
    classes reach the model. The model is trained by the check: pass a throwaway one.
    """
    if not samples:
        raise ValueError("check_input_not_mutated needs at least one sample")
    if labels is not None and len(labels) != len(samples):
        raise ValueError(f"{len(samples)} samples but {len(labels)} labels")
    name = _name(model)
    for i, sample in enumerate(samples):
        y = labels[i] if labels is not None else i % 2 == 1
        x = copy.deepcopy(dict(sample))
        _predict("check_input_not_mutated", name, model, x, i)
        _same_input(name, "predict_proba_one", i, sample, x)
        _learn("check_input_not_mutated", name, model, x, y, i)
        _same_input(name, "learn_one", i, sample, x)


def check_sane_prior(model: Classifier, sample: Sample, lo: float = 0.0, hi: float = 0.5) -> None:
    """Before any learning, ``predict_proba_one(x)[True]`` is a probability in ``[lo, hi)``.

    ``hi`` is exclusive on purpose: most of Beacon's targets (fraud, acceptance,
    churn) are rare, and a model that starts at exactly 0.5 (a bare River
    ``LogisticRegression``) has no prior at all. Give it one, e.g. with
    ``intercept_init`` set to the log-odds of the expected base rate.
    """
    name = _name(model)
    proba = _proba(name, "check_sane_prior", model, dict(sample), "a fresh model")
    p = proba[True]
    if not lo <= p < hi:
        raise AssertionError(
            f"check_sane_prior: {name}: a fresh model predicts P(True) = {p!r}, outside [{lo}, {hi}); "
            "start it from the expected base rate (for River's LogisticRegression, intercept_init = "
            "log(rate / (1 - rate)))"
        )


def check_learns(model: Classifier, samples_with_labels: Sequence[Labelled]) -> None:
    """After learning the samples, predictions on them have changed and are still probabilities."""
    if not samples_with_labels:
        raise ValueError("check_learns needs at least one labelled sample")
    name = _name(model)
    before = [
        _proba(name, "check_learns", model, dict(x), "before learning")[True] for x, _ in samples_with_labels
    ]
    for i, (x, y) in enumerate(samples_with_labels):
        _learn("check_learns", name, model, dict(x), y, i)
    after = [
        _proba(name, "check_learns", model, dict(x), "after learning")[True] for x, _ in samples_with_labels
    ]
    if before == after:
        raise AssertionError(
            f"check_learns: {name}: learning {len(samples_with_labels)} samples changed no prediction "
            f"(P(True) of the first is still {after[0]!r})"
        )


def run_all(
    model_factory: Callable[[], Classifier],
    samples_with_labels: Sequence[Labelled],
    prior_sample: Sample | None = None,
) -> list[str]:
    """Every check, each on a new model from ``model_factory``; returns the names of the checks run.

    The samples should hold both classes. The prior is checked on ``prior_sample``
    (default: the first sample), so pass an ordinary input there: a model may rightly
    start high on an input that looks like fraud. The pickle round trip runs on a model
    that has learned the samples and again on a fresh one.
    """
    if not samples_with_labels:
        raise ValueError("run_all needs at least one labelled sample")
    xs = [x for x, _ in samples_with_labels]
    ys = [y for _, y in samples_with_labels]
    check_sane_prior(model_factory(), xs[0] if prior_sample is None else prior_sample)
    check_input_not_mutated(model_factory(), xs, ys)
    trained = model_factory()
    check_learns(trained, samples_with_labels)
    check_pickle_round_trip(trained, xs)
    check_pickle_round_trip(model_factory(), xs)
    return ["sane_prior", "input_not_mutated", "learns", "pickle_round_trip", "pickle_round_trip_fresh"]


def _name(model: object) -> str:
    return type(model).__name__


def _proba(name: str, check: str, model: Classifier, x: dict[str, Any], when: str) -> dict[Any, float]:
    """``predict_proba_one(x)``, refused unless P(True) is a probability (and sums to 1 with P(False))."""
    proba = _predict(check, name, model, x, None)
    if not isinstance(proba, Mapping) or True not in proba:
        raise AssertionError(
            f"{check}: {name}: {when}, predict_proba_one returned {proba!r}, with no P(True)"
        )
    p = proba[True]
    if not isinstance(p, int | float) or not 0.0 <= p <= 1.0:  # also refuses NaN
        raise AssertionError(f"{check}: {name}: {when}, P(True) = {p!r} is not a probability in [0, 1]")
    if False in proba and not math.isclose(proba[False] + p, 1.0, abs_tol=1e-9):
        raise AssertionError(f"{check}: {name}: {when}, P(False) + P(True) = {proba[False] + p!r}, not 1")
    return dict(proba)


def _same_input(name: str, method: str, i: int, expected: Sample, x: Mapping[str, Any]) -> None:
    if x == dict(expected):
        return
    added = sorted(set(x) - set(expected))
    removed = sorted(set(expected) - set(x))
    changed = sorted(k for k in set(x) & set(expected) if x[k] != expected[k])
    raise AssertionError(
        f"check_input_not_mutated: {name}: {method} changed sample {i} in place "
        f"(added {added}, removed {removed}, changed {changed}); copy the dict before changing it"
    )


def _predict(check: str, name: str, model: Classifier, x: dict[str, Any], i: int | None) -> dict[Any, float]:
    try:
        return model.predict_proba_one(x)
    except Exception as exc:  # a model that raises fails the check, with the sample named
        sample = "" if i is None else f" of sample {i}"
        raise AssertionError(f"{check}: {name}: predict_proba_one{sample} {x!r} raised {exc!r}") from exc


def _learn(check: str, name: str, model: Classifier, x: dict[str, Any], y: bool, i: int) -> None:
    try:
        model.learn_one(x, y)
    except Exception as exc:
        raise AssertionError(f"{check}: {name}: learn_one of sample {i} {x!r}, {y!r} raised {exc!r}") from exc
