"""The scorer the decision pipeline calls, backed by the registry's online models.

Workers only predict; one trainer learns and publishes snapshots, which workers install
(``install``) between two events. Until a snapshot arrives a worker scores with a fresh
model (its prior, and for fraud the customer's baseline deviation), version ``<name>-fresh``.

>>> s = ModelScorer()
>>> out = s.score({"new_device": 1, "amount_ratio_30d": 8.0, "n_30d": 1}, ("gold",))
>>> round(out.fraud, 3), out.offer["gold"], s.versions["fraud"]
(0.083, 0.05, 'fraud-fresh')
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.domain.scoring import Scores
from models.errors import ModelError
from models.featureconfig import attribute_fields, input_mismatch, profile_fields
from models.features import FeatureSpec
from models.registry import REGISTRY, build, spec_for


class ModelScorer:
    def __init__(self, specs: Mapping[str, FeatureSpec] | None = None) -> None:
        self.specs = {name: spec_for(name, specs) for name in REGISTRY}
        self.models: dict[str, Any] = {name: build(name, specs) for name in REGISTRY}
        # What the decision copies from the profile for the models (build_features).
        self.profile_fields = profile_fields(self.specs)
        self.attribute_fields = attribute_fields(self.specs)  # kept in audit records
        self._versions: dict[str, str] = {name: f"{name}-fresh" for name in REGISTRY}
        self._shadows = tuple(name for name, spec in REGISTRY.items() if spec.shadow_of)
        # Models with equal specs (a challenger and its champion) get one extraction per event.
        distinct: list[FeatureSpec] = []
        for spec in self.specs.values():
            if spec not in distinct:
                distinct.append(spec)
        self._slot = {name: distinct.index(spec) for name, spec in self.specs.items()}

    @property
    def versions(self) -> Mapping[str, str]:
        return self._versions

    def install(self, name: str, version: str, model: Any) -> None:
        """Swap in a new snapshot: one assignment each, between two events. One learned on
        other inputs than this worker's features file gives is refused (ModelError)."""
        mismatch = input_mismatch(model, self.specs[name])
        if mismatch is not None:
            raise ModelError(f"{name} {version}: {mismatch}")
        self.models = {**self.models, name: model}
        self._versions = {**self._versions, name: version}

    def inputs(self, name: str, features: Mapping[str, Any], attributes: Mapping[str, Any]) -> dict[str, Any]:
        return self.specs[name].extract(features, attributes)

    def score(
        self,
        features: Mapping[str, Any],
        offer_ids: tuple[str, ...],
        attributes: Mapping[str, Any] | None = None,
    ) -> Scores:
        attrs = attributes or {}
        models = self.models  # one set of versions for this event
        extracted: dict[int, dict[str, Any]] = {}  # a challenger shares its champion's inputs

        def inputs(name: str) -> dict[str, Any]:
            slot = self._slot[name]
            x = extracted.get(slot)
            if x is None:
                x = extracted[slot] = self.specs[name].extract(features, attrs)
            return x

        fraud = models["fraud"].predict_proba_one(inputs("fraud"))[True]
        churn = models["churn"].predict_proba_one(inputs("churn"))[True]
        offers = models["offers"].predict_offers(inputs("offers"), offer_ids)
        # A copy for each challenger: whatever it does to its input, the champion's stays.
        shadow = {
            name: float(models[name].predict_proba_one(dict(inputs(name)))[True]) for name in self._shadows
        }
        # Unrounded: two offers 1e-8 apart must still rank apart, and a rare-class score
        # (fraud at 1e-7) must not tie at 0. Text for people rounds where it is written.
        return Scores(fraud=float(fraud), churn=float(churn), offer=offers, shadow=shadow)
