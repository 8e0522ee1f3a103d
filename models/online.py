"""Online classifiers on River's protocol (``predict_proba_one`` / ``learn_one``).

- :class:`OnlineLogit`: scaled numbers + one-hot categories into a logistic regression,
  shrunk towards a prior until it has seen enough labels (a fresh model answers the
  base rate, not River's 0.5).
- :class:`FraudRisk`: a supervised :class:`OnlineLogit` trained on labels (positives
  weighted up: about 1 fraud in 600 transactions) blended with an unsupervised signal,
  the customer's deviation from their own baseline (``engine.domain.scoring.fraud_baseline``,
  the built-in scorer's too, here with its terminal weight), so a bank with no labels yet
  still gets a useful score; the blend moves to the supervised model as fraud labels arrive.
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

from collections.abc import Hashable, Iterable, Mapping
from typing import Any

from river import base, linear_model, optim, preprocessing

from engine.domain.scoring import MODEL_FRAUD_WEIGHTS, fraud_baseline

_SHRINK = 20.0  # labels after which the model's own estimate and the prior weigh the same


class _Inputs:
    """Scaled numeric inputs plus one-hot categories: River transformers, fitted online."""

    def __init__(self, numeric: tuple[str, ...], categorical: tuple[str, ...]) -> None:
        self.numeric = numeric
        self.categorical = categorical
        self.scaler = preprocessing.StandardScaler()
        self.onehot = preprocessing.OneHotEncoder()

    def transform(self, x: Mapping[Any, Any]) -> dict[str, float]:
        num = {k: float(x.get(k) or 0.0) for k in self.numeric}
        out: dict[str, float] = dict(self.scaler.transform_one(num))  # type: ignore[no-untyped-call]
        for k in self.categorical:
            out[f"{k}={x.get(k, 'unknown')}"] = 1.0
        return out

    def learn(self, x: Mapping[Any, Any]) -> None:
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
        trust = self.n_labels / (self.n_labels + _SHRINK)
        return trust * own + (1.0 - trust) * self.prior

    def learn_one(self, x: dict[Hashable, Any], y: base.typing.ClfTarget) -> None:
        positive = bool(y)
        self._inputs.learn(x)
        weight = self.positive_weight if positive else 1.0
        self._head.learn_one(self._inputs.transform(x), positive, w=weight)
        self.n_labels += 1
        self.n_positive += int(positive)


class FraudRisk(base.Classifier):
    """Supervised fraud blended with the baseline; with no fraud label yet, the baseline alone.

    >>> x = {"new_device": 1.0, "terminal_changed": 1.0}
    >>> FraudRisk().predict_proba_one(x)[True] == fraud_baseline(x, MODEL_FRAUD_WEIGHTS)
    True
    """

    def __init__(
        self,
        numeric: tuple[str, ...] = (),
        categorical: tuple[str, ...] = (),
        positive_weight: float = 30.0,
        labels_to_trust: float = 30.0,
    ) -> None:
        self.numeric = numeric
        self.categorical = categorical
        self.positive_weight = positive_weight
        self.labels_to_trust = labels_to_trust
        self.supervised = OnlineLogit(numeric, categorical, prior=0.002, positive_weight=positive_weight)

    def predict_proba_one(self, x: dict[Hashable, Any], **kwargs: Any) -> dict[base.typing.ClfTarget, float]:
        anomaly = fraud_baseline(x, MODEL_FRAUD_WEIGHTS)
        positives = self.supervised.n_positive
        if positives == 0:
            p = anomaly
        else:
            w = positives / (positives + self.labels_to_trust)
            p = w * self.supervised.predict_proba_one(x)[True] + (1.0 - w) * anomaly
        return {False: 1.0 - p, True: p}

    def learn_one(self, x: dict[Hashable, Any], y: base.typing.ClfTarget) -> None:
        self.supervised.learn_one(x, y)


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

    def learn_one(self, x: dict[Hashable, Any], y: base.typing.ClfTarget) -> None:
        offer = str(x.get("offer"))
        self._inputs.learn(x)
        head = self._heads.setdefault(offer, _head(self.lr))
        head.learn_one(self._inputs.transform(x), bool(y))
        self.n_labels[offer] = self.n_labels.get(offer, 0) + 1
