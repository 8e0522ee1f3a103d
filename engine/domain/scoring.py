"""The scorer interface the decision pipeline calls, the built-in scorer, and the fraud
baseline that both it and the online fraud model use.

A scorer turns features into scores: ``fraud`` and ``churn`` probabilities and an offer
propensity per offer id. Workers score with the online River models
(``models.scorer.ModelScorer``, which satisfies :class:`Scorer`). :class:`BuiltinScorer`
is a fixed, documented logistic function of a few risk features and a constant prior
propensity per offer: deterministic, so tests and benchmarks are repeatable.

:func:`fraud_baseline` is the unsupervised part of fraud risk, how far an event is from
the customer's own habits; the built-in scorer's fraud score is this, and the online
fraud model (``models.online.FraudRisk``) answers it until fraud labels arrive and
blends it in after.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol


@dataclass(frozen=True, slots=True)
class Scores:
    fraud: float
    churn: float
    offer: Mapping[str, float] = field(default_factory=dict)
    shadow: Mapping[str, float] = field(default_factory=dict)  # challengers' scores, recorded only

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"fraud": self.fraud, "churn": self.churn, "offer": dict(self.offer)}
        if self.shadow:
            out["shadow"] = dict(self.shadow)
        return out


class Scorer(Protocol):
    @property
    def versions(self) -> Mapping[str, str]: ...

    @property
    def profile_fields(self) -> tuple[str, ...]:
        """Profile fields the models read, copied into the features (build_features)."""
        ...

    @property
    def attribute_fields(self) -> tuple[str, ...]:
        """Event attributes the models read: what an audit record keeps (Event.audited)."""
        ...

    def score(
        self,
        features: Mapping[str, Any],
        offer_ids: tuple[str, ...],
        attributes: Mapping[str, Any] | None = None,
    ) -> Scores: ...


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


# Hand-set weights: log-odds added per unit of each signal (inputs capped at 5).
BUILTIN_FRAUD_WEIGHTS: Final[Mapping[str, float]] = {
    "new_device": 1.6,
    "night": 0.6,
    "pin_failures_1h": 0.9,
    "channel_switch": 0.3,
}
# The online fraud model's baseline also weighs a terminal change, as it has since it was
# written; the built-in scorer never did. Two sets, so neither path's scores move: the
# built-in's are pinned by tests and benchmarks under version ``builtin-1``, the model's by
# every published snapshot (a snapshot calls this at scoring time, it does not carry it).
MODEL_FRAUD_WEIGHTS: Final[Mapping[str, float]] = {**BUILTIN_FRAUD_WEIGHTS, "terminal_changed": 0.4}


def fraud_baseline(
    features: Mapping[Any, Any], weights: Mapping[str, float] = BUILTIN_FRAUD_WEIGHTS
) -> float:
    """Unsupervised fraud risk: how far this event is from the customer's own habits.

    A logistic function of the weighted signals, the amount against the customer's
    30-day average for the type (capped at 20x) and an impossible travel speed. A missing
    or empty input counts as 0 (for the speed: as not known). ``features`` is any mapping
    with these names: the decision's features, or a River model's input dict.

    >>> round(fraud_baseline({"new_device": 1, "amount_ratio_30d": 8.0}), 3)
    0.083
    >>> f = {"terminal_changed": 1}
    >>> round(fraud_baseline(f), 5), round(fraud_baseline(f, MODEL_FRAUD_WEIGHTS), 5)
    (0.00247, 0.00368)
    """
    z = -6.0
    for name, weight in weights.items():
        z += weight * min(float(features.get(name) or 0.0), 5.0)
    z += 0.25 * min(max(float(features.get("amount_ratio_30d") or 0.0), 0.0), 20.0)
    if float(features.get("speed_kmh") or -1.0) > 900:
        z += 3.0
    return _sigmoid(z)


@dataclass(frozen=True)
class BuiltinScorer:
    """Fixed-weight scores: fraud is :func:`fraud_baseline` with the built-in weights.

    >>> s = BuiltinScorer().score({"new_device": 1, "amount_ratio_30d": 8.0}, ("x",))
    >>> round(s.fraud, 3), s.offer["x"]
    (0.083, 0.05)
    """

    offer_prior: float = 0.05
    profile_fields: tuple[str, ...] = ()
    attribute_fields: tuple[str, ...] = ()
    versions: Mapping[str, str] = field(
        default_factory=lambda: {"fraud": "builtin-1", "churn": "builtin-1", "offer": "builtin-1"}
    )

    def score(
        self,
        features: Mapping[str, Any],
        offer_ids: tuple[str, ...],
        attributes: Mapping[str, Any] | None = None,
    ) -> Scores:
        # Dormancy and complaints push churn up; recent activity pulls it down.
        dormant = int(features.get("n_30d", 0)) <= 1
        churn_z = -2.5 + 2.0 * dormant + 1.2 * min(int(features.get("complaints_7d", 0)), 3)
        return Scores(
            fraud=fraud_baseline(features),
            churn=_sigmoid(churn_z),
            offer={oid: self.offer_prior for oid in offer_ids},
        )
