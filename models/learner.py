"""Test-then-train for every registered model, and the label rules. No I/O.

Each label is first scored by the current model (that prediction feeds the progressive
quality metrics, so they measure the model on data it has not learned yet), then
learned. Inputs are rebuilt from the features the decision itself used, kept by the
trainer from the ``decisions.audit`` record, so a label arriving weeks later is learned
against what the model actually saw.

>>> from models.registry import REGISTRY, build
>>> learner = Learner({n: build(n) for n in REGISTRY}, {n: REGISTRY[n].features for n in REGISTRY})
>>> p = learner.learn("fraud", {"new_device": 1, "amount_ratio_30d": 8.0}, {}, True, delay_s=3600.0)
>>> round(p, 3), learner.quality["fraud"].summary()["labels"]
(0.083, 1)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from models.features import FeatureSpec
from models.quality import ProgressiveQuality
from models.registry import shadows_of

# Event types a fraud label can be about; others never become "legitimate" negatives.
MONETARY_TYPES = frozenset({"withdrawal", "transfer", "card_payment", "bill_payment", "deposit"})
# Offer kinds whose uptake the propensity model learns (fallbacks are not offers).
LEARNED_KINDS = frozenset({"offer", "service", "retention"})


class Learner:
    def __init__(self, models: dict[str, Any], specs: Mapping[str, FeatureSpec], window: int = 5000) -> None:
        self.models = models
        self.specs = dict(specs)
        self.quality = {name: ProgressiveQuality(window) for name in models}
        self.learned = dict.fromkeys(models, 0)  # since start, per model
        self.corrections = 0  # late acceptances after an offer was counted as ignored
        self.fraud_corrections = 0  # fraud labels turned over: a late report, or a confirmation

    def observe(self, features: Mapping[str, Any], attributes: Mapping[str, Any]) -> None:
        """A decision's inputs, labelled or not: every model fits its input scaling on the
        whole population it scores (models/online.py, _Inputs), not on labels alone."""
        for name, model in self.models.items():
            observe = getattr(model, "observe_one", None)
            if observe is not None:
                observe(self.specs[name].extract(features, attributes))

    def learn(
        self,
        name: str,
        features: Mapping[str, Any],
        attributes: Mapping[str, Any],
        label: bool,
        delay_s: float | None = None,
        offer: str | None = None,
        take_back: bool = False,
    ) -> float:
        """Score, record, learn; returns the score the model gave before learning. With
        ``take_back``, first take back ``not label`` learned earlier (see :meth:`correct`)."""
        x = self.specs[name].extract(features, attributes)
        if offer is not None:
            x["offer"] = offer
        model = self.models[name]
        p = float(model.predict_proba_one(x)[True])
        self.quality[name].record(label, p, delay_s)
        if take_back:
            model.learn_one(x, not label, w=-1.0)
        model.learn_one(x, label)
        self.learned[name] += 1
        for challenger in shadows_of(name):  # same label, same inputs: a fair comparison
            if challenger in self.models:
                self.learn(challenger, features, attributes, label, delay_s, offer, take_back)
        return p

    def correct(
        self,
        name: str,
        features: Mapping[str, Any],
        attributes: Mapping[str, Any],
        label: bool,
        delay_s: float | None = None,
    ) -> float:
        """Take back a label learned earlier as ``not label`` (``learn_one(x, not label,
        w=-1)``, a step the other way on the same inputs) and learn ``label``; returns the
        score before. The model must accept ``w`` (the fraud models do). Recorded in the
        quality window as a new label: the one taken back stays there too."""
        return self.learn(name, features, attributes, label, delay_s, take_back=True)


def inputs_of(audit: Mapping[str, Any], specs: Mapping[str, FeatureSpec]) -> dict[str, Any]:
    """What the trainer keeps of a decision: the features and attributes any model reads,
    what was shown, and when. A few hundred bytes instead of the whole audit record."""
    features = audit.get("features") or {}
    event = audit.get("event") or {}
    wanted = {n for s in specs.values() for n in s.feature_keys}
    attrs_wanted = {n for s in specs.values() for n in (*s.attr_numeric, *s.attr_categorical)}
    attributes = event.get("attributes") or {}
    return {
        "f": {k: features[k] for k in wanted if k in features},
        "a": {k: attributes[k] for k in attrs_wanted if k in attributes},
        "ts": float(event.get("ts") or 0.0),
        "type": event.get("type"),
        "customer_id": audit.get("customer_id"),
        "shown": [a["id"] for a in audit.get("actions") or [] if a.get("kind") in LEARNED_KINDS],
    }
