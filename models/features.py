"""Feature specs: which inputs a model sees, declared per model.

A model's input is a flat dict built from the decision's features (engine/domain/features.py:
event-derived values such as ``amount`` and ``hour``, the rolling state, and profile
categoricals such as ``segment``) plus chosen fields of the event's ``attributes``, so a
bank can feed its own transaction features by configuration. Numbers become floats;
categoricals stay strings (the model one-hot encodes or hashes them). The input dict is
built fresh, so nothing a model does can change the decision's features.

>>> spec = FeatureSpec(numeric=("amount", "n_24h"), categorical=("segment", "channel"),
...                    attr_numeric=("balance_after",), attr_categorical=("mcc",))
>>> x = spec.extract({"amount": 50.0, "n_24h": 3, "segment": "mass", "channel": "atm"},
...                  {"balance_after": "120.5", "mcc": 5411})
>>> x["n_24h"], x["segment"], x["attr_balance_after"], x["attr_mcc"]
(3.0, 'mass', 120.5, '5411')
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FeatureSpec:
    numeric: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    attr_numeric: tuple[str, ...] = ()  # event.attributes fields, numbers
    attr_categorical: tuple[str, ...] = ()  # event.attributes fields, categories
    # Profile fields: the decision copies them into its features as ``profile.<name>``
    # (engine/domain/features.py), so the audit record keeps them for the trainer.
    profile_numeric: tuple[str, ...] = ()
    profile_categorical: tuple[str, ...] = ()

    def extract(self, features: Mapping[str, Any], attributes: Mapping[str, Any]) -> dict[str, Any]:
        x: dict[str, Any] = {}
        for name in self.numeric:
            x[name] = _number(features.get(name))
        for name in self.categorical:
            value = features.get(name)
            x[name] = "unknown" if value is None else str(value)
        for name in self.attr_numeric:
            x["attr_" + name] = _number(attributes.get(name))
        for name in self.attr_categorical:
            value = attributes.get(name)
            x["attr_" + name] = "unknown" if value is None else str(value)
        for name in self.profile_numeric:
            x["profile_" + name] = _number(features.get("profile." + name))
        for name in self.profile_categorical:
            value = features.get("profile." + name)
            x["profile_" + name] = "unknown" if value is None else str(value)
        return x

    @property
    def numeric_inputs(self) -> tuple[str, ...]:
        return (
            self.numeric
            + tuple("attr_" + n for n in self.attr_numeric)
            + tuple("profile_" + n for n in self.profile_numeric)
        )

    @property
    def categorical_inputs(self) -> tuple[str, ...]:
        return (
            self.categorical
            + tuple("attr_" + n for n in self.attr_categorical)
            + tuple("profile_" + n for n in self.profile_categorical)
        )

    @property
    def feature_keys(self) -> tuple[str, ...]:
        """The decision features this spec reads (profile fields under ``profile.<name>``)."""
        profile = (*self.profile_numeric, *self.profile_categorical)
        return (*self.numeric, *self.categorical, *("profile." + n for n in profile))


def _number(value: Any) -> float:
    kind = type(value)
    if kind is float:  # the common cases first: this runs ~50 times per decision
        return value if value - value == 0.0 else 0.0  # NaN and infinities give NaN
    if kind is int:
        return float(value)
    if isinstance(value, bool):
        return float(value)
    try:
        out = float(value)
    except (TypeError, ValueError):
        return 0.0
    return out if math.isfinite(out) else 0.0


# What each kind of model sees by default. Banks add their own inputs per model with a
# model features file (models/featureconfig.py, BEACON_MODEL_FEATURES).
FRAUD_FEATURES = FeatureSpec(
    numeric=("log_amount", "amount_ratio_30d", "new_device", "known_devices", "night", "pin_failures_1h",
             "channel_switch", "terminal_changed", "speed_kmh", "home_distance_km", "n_10m", "n_1h",
             "n_10m_type", "seconds_since_last", "device_customers_24h", "secs_since_password_reset",
             "secs_since_new_device"),
    categorical=("channel", "type", "kyc_risk"),
)  # fmt: skip
CHURN_FEATURES = FeatureSpec(
    numeric=(
        "n_7d",
        "n_30d",
        "amt_30d",
        "complaints_7d",
        "contacts_7d",
        "seconds_since_last",
        "secs_since_login",
    ),
    categorical=("segment", "age_band", "income_band"),
)
OFFER_FEATURES = FeatureSpec(
    numeric=("log_amount", "n_30d", "n_30d_channel", "amt_30d", "hour", "weekday", "complaints_7d"),
    categorical=("segment", "age_band", "income_band", "channel", "type"),
)
