"""The scorer interface the decision pipeline calls, and the built-in scorer.

A scorer turns features into scores: ``fraud`` and ``churn`` probabilities and an
offer propensity per offer id. The online River models (models/) will implement the
same interface; until then the built-in scorer is a fixed, documented logistic
function of a few risk features, and a constant prior propensity per offer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


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

    def score(
        self,
        features: Mapping[str, Any],
        offer_ids: tuple[str, ...],
        attributes: Mapping[str, Any] | None = None,
    ) -> Scores: ...


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


# Hand-set weights: log-odds added per unit of each feature (capped inputs).
_FRAUD_WEIGHTS = {
    "new_device": 1.6,
    "night": 0.6,
    "pin_failures_1h": 0.9,
    "channel_switch": 0.3,
}


@dataclass(frozen=True)
class BuiltinScorer:
    """Fixed-weight scores; deterministic, so tests and benchmarks are repeatable.

    >>> s = BuiltinScorer().score({"new_device": 1, "amount_ratio_30d": 8.0}, ("x",))
    >>> round(s.fraud, 3), s.offer["x"]
    (0.083, 0.05)
    """

    offer_prior: float = 0.05
    versions: Mapping[str, str] = field(
        default_factory=lambda: {"fraud": "builtin-1", "churn": "builtin-1", "offer": "builtin-1"}
    )

    def score(
        self,
        features: Mapping[str, Any],
        offer_ids: tuple[str, ...],
        attributes: Mapping[str, Any] | None = None,
    ) -> Scores:
        z = -6.0
        for name, weight in _FRAUD_WEIGHTS.items():
            z += weight * min(float(features.get(name, 0) or 0), 5.0)
        z += 0.25 * min(max(float(features.get("amount_ratio_30d", 0.0)), 0.0), 20.0)
        speed = float(features.get("speed_kmh", -1.0))
        if speed > 900:
            z += 3.0
        # Dormancy and complaints push churn up; recent activity pulls it down.
        dormant = int(features.get("n_30d", 0)) <= 1
        churn_z = -2.5 + 2.0 * dormant + 1.2 * min(int(features.get("complaints_7d", 0)), 3)
        return Scores(
            fraud=round(_sigmoid(z), 6),
            churn=round(_sigmoid(churn_z), 6),
            offer={oid: self.offer_prior for oid in offer_ids},
        )
