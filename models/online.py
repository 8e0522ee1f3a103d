"""Online classifiers on River's protocol (``predict_proba_one`` / ``learn_one``).

- :class:`OnlineLogit`: scaled numbers + one-hot categories into a logistic regression,
  shrunk towards a prior until it has seen enough labels (a fresh model answers the
  base rate, not River's 0.5).
- :class:`FraudRisk`: a logistic regression trained on fraud labels (positives weighted
  up, the weight taken back out of the score so it stays calibrated) whose inputs include
  an unsupervised signal, the customer's deviation from their own baseline
  (``engine.domain.scoring.fraud_baseline``, the built-in scorer's too, here with its
  terminal weight): a bank with no labels yet gets that signal as the score, and labels
  move the model on from it.
- :class:`OfferPropensity`: one model per offer over shared inputs (``x["offer"]`` names
  the offer); the inputs are transformed once and every offer's head reads them, so
  scoring a dozen offers costs little more than one.

>>> m = OnlineLogit(("amount",), ("segment",), prior=0.02)
>>> round(m.predict_proba_one({"amount": 10.0, "segment": "mass"})[True], 3)
0.02
>>> for i in range(400):
...     m.learn_one({"amount": float(i % 10), "segment": "mass"}, i % 10 >= 8)
>>> m.predict_proba_one({"amount": 9.0, "segment": "mass"})[True] > 0.5
True
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping
from typing import Any

from river import base, linear_model, optim, preprocessing

from engine.domain.scoring import MODEL_FRAUD_WEIGHTS, fraud_baseline

_Z_MAX = 8.0  # scaled inputs are clipped to +-this many standard deviations
_SHRINK = 20.0  # labels after which the model's own estimate and the prior weigh the same
_BASE_Z = -6.0  # the baseline's log-odds for an event with nothing unusual
_PRIOR = "_baseline"  # FraudRisk's input holding the baseline (centred log-odds)
# Before labels, log-odds added per unit of log(1 + amount) away from ~55 (capped at 4
# units): enough to break ties between customers with no history, odds at most 1.5x apart.
_AMOUNT_TILT = 0.05
_AMOUNT_MID = 4.0


class _Inputs:
    """Scaled numeric inputs plus one-hot categories: River transformers, fitted online.

    The scaling is fitted on every decision the trainer sees (``observe``), not only on
    the labelled ones: a value that labels have not shown yet (the first night after a
    day of traffic) is then measured against the whole population, not against a
    variance of almost nothing. Learned from labels alone, one fraud at night among 10,000
    daytime payments gave every night payment a z-score near 100, and every night payment
    scored 1.0 until its legitimate labels matured (docs/models.md). Until a model has
    observed anything (in-process use, old snapshots) it fits on what it learns, as
    before. Scaled values are also clipped to ``_Z_MAX``: one novel value moves the
    score, it does not decide it alone.
    """

    observed = False  # a class default: snapshots pickled before this attribute read False

    def __init__(self, numeric: tuple[str, ...], categorical: tuple[str, ...]) -> None:
        self.numeric = numeric
        self.categorical = categorical
        self.scaler = preprocessing.StandardScaler()
        self.onehot = preprocessing.OneHotEncoder()

    def transform(self, x: Mapping[Any, Any]) -> dict[str, float]:
        num = {k: float(x.get(k) or 0.0) for k in self.numeric}
        scaled = self.scaler.transform_one(num)  # type: ignore[no-untyped-call]
        out: dict[str, float] = {
            k: v if -_Z_MAX < v < _Z_MAX else math.copysign(_Z_MAX, v) for k, v in scaled.items()
        }
        for k in self.categorical:
            out[f"{k}={x.get(k, 'unknown')}"] = 1.0
        return out

    def learn(self, x: Mapping[Any, Any]) -> None:
        """A labelled example's inputs: fitted only while nothing is observed."""
        if not self.observed:
            self.scaler.learn_one({k: float(x.get(k) or 0.0) for k in self.numeric})  # type: ignore[no-untyped-call]

    def observe(self, x: Mapping[Any, Any]) -> None:
        """A decision's inputs, labelled or not (the trainer, for every decision)."""
        self.observed = True
        self.scaler.learn_one({k: float(x.get(k) or 0.0) for k in self.numeric})  # type: ignore[no-untyped-call]


def _head(lr: float) -> linear_model.LogisticRegression:
    return linear_model.LogisticRegression(optimizer=optim.SGD(lr), l2=1e-4)


class OnlineLogit(base.Classifier):
    def __init__(
        self,
        numeric: tuple[str, ...] = (),
        categorical: tuple[str, ...] = (),
        prior: float = 0.05,
        lr: float = 0.05,
        positive_weight: float = 1.0,
    ) -> None:
        self.numeric = numeric
        self.categorical = categorical
        self.prior = prior
        self.lr = lr
        self.positive_weight = positive_weight
        self._inputs = _Inputs(numeric, categorical)
        self._head = _head(lr)
        self.n_labels = 0
        self.n_positive = 0

    def predict_proba_one(self, x: dict[Hashable, Any], **kwargs: Any) -> dict[base.typing.ClfTarget, float]:
        p = self._estimate(x)
        return {False: 1.0 - p, True: p}

    def _estimate(self, x: Mapping[Any, Any]) -> float:
        if self.n_labels == 0:
            return self.prior
        own = float(self._head.predict_proba_one(self._inputs.transform(x))[True])  # type: ignore[no-untyped-call]
        own = _unweighted(own, self.positive_weight)  # calibrated: the weight taken back out
        trust = self.n_labels / (self.n_labels + _SHRINK)
        return trust * own + (1.0 - trust) * self.prior

    def observe_one(self, x: Mapping[Any, Any]) -> None:
        """A decision's inputs, before any label (the inputs' scaling: see _Inputs)."""
        self._inputs.observe(x)

    def learn_one(self, x: dict[Hashable, Any], y: base.typing.ClfTarget, w: float = 1.0) -> None:
        """Learn ``x`` as ``y``; ``w=-1`` takes back an earlier ``learn_one(x, y)``."""
        positive = bool(y)
        if w > 0:
            self._inputs.learn(x)
        weight = (self.positive_weight if positive else 1.0) * w
        self._head.learn_one(self._inputs.transform(x), positive, w=weight)
        step = 1 if w > 0 else -1
        self.n_labels += step
        self.n_positive += step * int(positive)


class FraudRisk(base.Classifier):
    """Supervised fraud on labels, with the unsupervised baseline as one of its inputs.

    The baseline (how far the event is from the customer's habits, plus a slight tilt
    by amount so customers with no history do not all tie) enters the logistic
    regression as an unscaled input whose weight starts at 1, with the intercept at the
    baseline's: before any label the model answers the baseline itself, and each label
    moves the weights from there, the baseline's among them. There is no blend to
    dilute the supervised ranking, and no jump when the first label arrives.

    Positives are learned with ``positive_weight`` (rare frauds move the weights), and
    the score takes that weight back out (the log-odds minus ``log(positive_weight)``),
    so it stays calibrated at the bank's real fraud rate. ``learn_one(x, y, w=-1)``
    takes a label back (a provisional "legitimate" that a late fraud report corrects).

    >>> x = {"new_device": 1.0, "terminal_changed": 1.0}
    >>> math.isclose(FraudRisk().predict_proba_one(x)[True], fraud_baseline(x, MODEL_FRAUD_WEIGHTS))
    True
    >>> small, large = ({"log_amount": math.log1p(a)} for a in (20.0, 2000.0))
    >>> FraudRisk().predict_proba_one(small)[True] < FraudRisk().predict_proba_one(large)[True]
    True
    """

    def __init__(
        self,
        numeric: tuple[str, ...] = (),
        categorical: tuple[str, ...] = (),
        positive_weight: float = 5.0,
        lr: float = 0.01,
    ) -> None:
        self.numeric = numeric
        self.categorical = categorical
        self.positive_weight = positive_weight
        self.lr = lr
        self._inputs = _Inputs(numeric, categorical)
        self._head = self._fresh_head()
        self.n_labels = 0
        self.n_positive = 0

    def _fresh_head(self) -> linear_model.LogisticRegression:
        head = linear_model.LogisticRegression(
            optimizer=optim.SGD(self.lr), l2=1e-4, intercept_init=_BASE_Z + math.log(self.positive_weight)
        )
        head._weights[_PRIOR] = 1.0  # the baseline, as it is, until labels say otherwise
        return head

    def _features(self, x: Mapping[Any, Any]) -> dict[str, float]:
        xt = self._inputs.transform(x)
        xt[_PRIOR] = prior_logit(x) - _BASE_Z  # 0 for an event with nothing unusual
        return xt

    def predict_proba_one(self, x: dict[Hashable, Any], **kwargs: Any) -> dict[base.typing.ClfTarget, float]:
        pw = float(self._head.predict_proba_one(self._features(x))[True])  # type: ignore[no-untyped-call]
        p = _unweighted(pw, self.positive_weight)
        return {False: 1.0 - p, True: p}

    def observe_one(self, x: Mapping[Any, Any]) -> None:
        """A decision's inputs, before any label (the inputs' scaling: see _Inputs)."""
        self._inputs.observe(x)

    def learn_one(self, x: dict[Hashable, Any], y: base.typing.ClfTarget, w: float = 1.0) -> None:
        """Learn ``x`` as ``y``; with ``w=-1``, take back an earlier ``learn_one(x, y)``
        (a step the other way on the same inputs: the counts go back too)."""
        positive = bool(y)
        if w > 0:
            self._inputs.learn(x)  # the inputs' statistics: the same event either way
        weight = (self.positive_weight if positive else 1.0) * w
        # Before the first fraud, negatives alone cannot say what fraud looks like, only
        # how rare it is: they move the intercept, not the weights (else they wear down
        # the baseline's weight while reports are still on their way: README "Fraud labels").
        features = self._features(x) if positive or self.n_positive > 0 else {}
        self._head.learn_one(features, positive, w=weight)
        step = 1 if w > 0 else -1
        self.n_labels += step
        self.n_positive += step * int(positive)

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "supervised" in state:  # pickled before 2026-12-04 (the blend): see _from_blend
            state = _from_blend(state)
        self.__dict__.update(state)


def prior_logit(x: Mapping[Any, Any]) -> float:
    """The fraud model's score before any label, as log-odds: the baseline's, plus a
    slight tilt by amount so that customers with no history (whose baseline is one
    constant) are still ranked, larger payments first.

    >>> [round(prior_logit({"log_amount": a}), 2) for a in (0.0, 1.0, 4.0, 9.0)]
    [-6.0, -6.15, -6.0, -5.8]
    """
    p = min(max(fraud_baseline(x, MODEL_FRAUD_WEIGHTS), 1e-12), 1.0 - 1e-12)
    z = math.log(p / (1.0 - p))
    amount = float(x.get("log_amount") or 0.0)
    if amount > 0.0:  # events without an amount (logins) are not tilted
        z += _AMOUNT_TILT * min(max(amount - _AMOUNT_MID, -4.0), 4.0)
    return z


def _unweighted(p: float, positive_weight: float) -> float:
    """A probability learned with positives weighted ``positive_weight``, weight taken out."""
    return p / (p + positive_weight * (1.0 - p)) if p < 1.0 else 1.0


def _from_blend(old: Mapping[str, Any]) -> dict[str, Any]:
    """An old FraudRisk (supervised OnlineLogit blended with the baseline) as a new one:
    its input statistics and learned weights carry over, recalibrated for its positive
    weight (30), with the baseline an input starting at weight 0 (the old weights were
    learned without it). Before any label, it is a fresh model."""
    sup = old["supervised"]
    pw = float(old.get("positive_weight", 30.0))
    new = FraudRisk.__new__(FraudRisk)
    new.__dict__.update(numeric=old["numeric"], categorical=old["categorical"], positive_weight=pw, lr=sup.lr)
    new._inputs = sup._inputs
    new._head = new._fresh_head()
    new.n_labels, new.n_positive = sup.n_labels, sup.n_positive
    if sup.n_labels:
        new._head = sup._head
        new._head._weights[_PRIOR] = 0.0
    return dict(new.__dict__)


class OfferPropensity(base.Classifier):
    def __init__(
        self,
        numeric: tuple[str, ...] = (),
        categorical: tuple[str, ...] = (),
        prior: float = 0.05,
        lr: float = 0.05,
    ) -> None:
        self.numeric = numeric
        self.categorical = categorical
        self.prior = prior
        self.lr = lr
        self._inputs = _Inputs(numeric, categorical)
        self._heads: dict[str, linear_model.LogisticRegression] = {}
        self.n_labels: dict[str, int] = {}

    def predict_proba_one(self, x: dict[Hashable, Any], **kwargs: Any) -> dict[base.typing.ClfTarget, float]:
        p = self.predict_offers(x, (str(x.get("offer")),))[str(x.get("offer"))]
        return {False: 1.0 - p, True: p}

    def predict_offers(self, x: Mapping[Any, Any], offer_ids: Iterable[str]) -> dict[str, float]:
        """Propensity per offer, inputs transformed once for all of them."""
        xt: dict[str, float] | None = None
        out: dict[str, float] = {}
        for offer in offer_ids:
            n = self.n_labels.get(offer, 0)
            if n == 0:
                out[offer] = self.prior
                continue
            if xt is None:
                xt = self._inputs.transform(x)
            own = float(self._heads[offer].predict_proba_one(xt)[True])  # type: ignore[no-untyped-call]
            trust = n / (n + _SHRINK)
            out[offer] = trust * own + (1.0 - trust) * self.prior
        return out

    def observe_one(self, x: Mapping[Any, Any]) -> None:
        """A decision's inputs, before any label (the inputs' scaling: see _Inputs)."""
        self._inputs.observe(x)

    def learn_one(self, x: dict[Hashable, Any], y: base.typing.ClfTarget) -> None:
        offer = str(x.get("offer"))
        self._inputs.learn(x)
        head = self._heads.setdefault(offer, _head(self.lr))
        head.learn_one(self._inputs.transform(x), bool(y))
        self.n_labels[offer] = self.n_labels.get(offer, 0) + 1
