"""Which inputs feed which model: a bank's own features, per model, validated at load.

A YAML file (``BEACON_MODEL_FEATURES``) names, for each model, the event attributes and
profile fields it reads, each with its type (``number`` or ``category``), and may replace
the model's built-in features. Whatever a model's entry does not say stays as built in
(``models/features.py``); a challenger reads what its champion reads. Every name is
checked when the file is read, so a typo stops the worker with the file, the model and the
field named, instead of feeding a model zeros.

>>> specs = parse_feature_config('''
... fraud:
...   attributes: {mcc: category, merchant_risk: number}
...   profile: {tenure_months: number}
... offers:
...   profile: {occupation: category}
... ''', "features.yaml")
>>> specs["fraud"].attr_numeric, specs["fraud"].attr_categorical, specs["fraud"].profile_numeric
(('merchant_risk',), ('mcc',), ('tenure_months',))
>>> specs["fraud_challenger"] == specs["fraud"], specs["churn"] == CHURN_FEATURES
(True, True)
>>> try:
...     parse_feature_config("fraud: {features: [log_amount, amount_ratio]}", "f.yaml")
... except FeatureConfigError as exc:
...     print(exc)
f.yaml: fraud: features: unknown feature 'amount_ratio' (see engine/domain/features.py)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from engine.domain.features import FEATURE_NAMES
from models.errors import ModelError
from models.features import CHURN_FEATURES, FRAUD_FEATURES, OFFER_FEATURES, FeatureSpec

BUILT_IN: dict[str, FeatureSpec] = {
    "fraud": FRAUD_FEATURES,
    "churn": CHURN_FEATURES,
    "offers": OFFER_FEATURES,
}
CHALLENGERS = {"fraud_challenger": "fraud"}  # a challenger is compared on its champion's inputs
_KEYS = frozenset({"features", "attributes", "profile"})
_TYPES = ("number", "category")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
# The decision's own features that are strings; the rest are numbers.
_CATEGORICAL_FEATURES = frozenset({"channel", "type", "segment", "age_band", "income_band", "kyc_risk"})


class FeatureConfigError(ModelError):
    """The model features file is not valid; the message names the file, model and field."""


def load_feature_config(path: str) -> dict[str, FeatureSpec]:
    """Every model's spec: the built-in ones, changed as the file at ``path`` says
    ("": the built-in ones)."""
    if not path:
        return parse_feature_config("{}", "built-in")
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise FeatureConfigError(f"model features file {path}: {exc.strerror or exc}") from exc
    return parse_feature_config(text, path)


def parse_feature_config(text: str, source: str) -> dict[str, FeatureSpec]:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise FeatureConfigError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise FeatureConfigError(f"{source}: expected a mapping of model name to its inputs")
    specs = dict(BUILT_IN)
    for model, entry in data.items():
        where = f"{source}: {model}"
        if model not in BUILT_IN:
            known = ", ".join(sorted(BUILT_IN))
            raise FeatureConfigError(f"{where}: unknown model (models with inputs of their own: {known})")
        specs[model] = _spec(BUILT_IN[model], entry, where)
    for challenger, champion in CHALLENGERS.items():
        specs[challenger] = specs[champion]
    return specs


def attribute_fields(specs: Mapping[str, FeatureSpec]) -> tuple[str, ...]:
    """The event attributes any model reads: what an audit record keeps of the event's
    attributes, with what the rules read (engine.domain.events.Event.audited)."""
    names = {n for s in specs.values() for n in (*s.attr_numeric, *s.attr_categorical)}
    return tuple(sorted(names))


def profile_fields(specs: Mapping[str, FeatureSpec]) -> tuple[str, ...]:
    """The profile fields any model reads: the decision copies these into its features."""
    names = {n for s in specs.values() for n in (*s.profile_numeric, *s.profile_categorical)}
    return tuple(sorted(names))


def input_mismatch(model: Any, spec: FeatureSpec) -> str | None:
    """Why a model (a snapshot) cannot run on this spec's inputs, or None when it can:
    one learned on other inputs would read the new ones as missing."""
    numeric, categorical = getattr(model, "numeric", None), getattr(model, "categorical", None)
    if numeric is None or categorical is None:
        return None  # a model that does not declare its inputs reads whatever it is given
    if tuple(numeric) == spec.numeric_inputs and tuple(categorical) == spec.categorical_inputs:
        return None
    learned = sorted({*numeric, *categorical} ^ {*spec.numeric_inputs, *spec.categorical_inputs})
    return f"it was learned on other inputs than the model features file gives (differ: {', '.join(learned)})"


def _spec(base: FeatureSpec, entry: Any, where: str) -> FeatureSpec:
    if not isinstance(entry, dict):
        raise FeatureConfigError(f"{where}: expected a mapping with any of {', '.join(sorted(_KEYS))}")
    unknown = set(entry) - _KEYS
    if unknown:
        raise FeatureConfigError(
            f"{where}: unknown key {sorted(unknown)[0]!r} (allowed: {', '.join(sorted(_KEYS))})"
        )
    spec = base
    if "features" in entry:
        names = _features(entry["features"], f"{where}: features")
        spec = replace(spec, numeric=tuple(n for n in names if n not in _CATEGORICAL_FEATURES))
        spec = replace(spec, categorical=tuple(n for n in names if n in _CATEGORICAL_FEATURES))
    if "attributes" in entry:
        num, cat = _typed(entry["attributes"], f"{where}: attributes")
        spec = replace(spec, attr_numeric=num, attr_categorical=cat)
    if "profile" in entry:
        num, cat = _typed(entry["profile"], f"{where}: profile")
        spec = replace(spec, profile_numeric=num, profile_categorical=cat)
    if not (spec.numeric_inputs or spec.categorical_inputs):
        raise FeatureConfigError(f"{where}: a model needs at least one input")
    return spec


def _features(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise FeatureConfigError(f"{where}: expected a list of feature names")
    for name in value:
        if name == "products":
            raise FeatureConfigError(f"{where}: products is a list, not a model input")
        if name not in FEATURE_NAMES:
            raise FeatureConfigError(f"{where}: unknown feature {name!r} (see engine/domain/features.py)")
    if len(set(value)) != len(value):
        raise FeatureConfigError(f"{where}: a feature is named twice")
    return tuple(value)


def _typed(value: Any, where: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``{name: number|category}`` -> (numeric names, categorical names)."""
    if not isinstance(value, dict):
        raise FeatureConfigError(f"{where}: expected a mapping of field name to number or category")
    numeric: list[str] = []
    categorical: list[str] = []
    for name, kind in value.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise FeatureConfigError(
                f"{where}: {name!r} is not a field name (letters, digits, _; at most 64)"
            )
        if kind not in _TYPES:
            raise FeatureConfigError(f"{where}: {name}: type must be number or category (got {kind!r})")
        (numeric if kind == "number" else categorical).append(name)
    return tuple(numeric), tuple(categorical)
