"""Issue 15, item 2: each model reads the inputs configured for it, a bank's profile
fields included, and a bad features file stops the process with the field named.

Before: one global list of event attributes fed every model, and no profile field other
than segment, age band, income band and KYC risk reached any model."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from engine.decide.pipeline import prepare
from engine.domain.events import Event
from engine.domain.state import Snapshot
from engine.errors import ConfigError
from engine.settings import Settings
from models.featureconfig import FeatureConfigError, load_feature_config, parse_feature_config
from models.learner import inputs_of
from models.scorer import ModelScorer
from tests.unit.rulefixture import fixture_rules

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "model-features.example.yaml"
README = ROOT / "README.md"
CONFIG = """
fraud:
  attributes: {mcc: category, merchant_risk: number}
  profile: {tenure_months: number}
offers:
  attributes: {campaign: category}
  profile: {occupation: category}
"""


def _payment(**attributes: object) -> Event:
    return Event(
        "e1", "c1", "mobile", "card_payment", 1_795_428_000.0, amount=80.0, attributes=dict(attributes)
    )


def test_each_model_reads_its_own_attributes_and_profile_fields() -> None:
    specs = parse_feature_config(CONFIG, "test.yaml")
    scorer = ModelScorer(specs)
    profile = {"segment": "mass", "tenure_months": 40, "occupation": "nurse", "products": ["current"]}
    event = _payment(mcc="5411", merchant_risk=0.7, campaign="spring")
    features, _ = prepare(event, Snapshot(windows={}, profile=profile), fixture_rules(), scorer)
    assert features["profile.tenure_months"] == 40 and features["profile.occupation"] == "nurse"
    fraud = scorer.inputs("fraud", features, event.attributes)
    offers = scorer.inputs("offers", features, event.attributes)
    churn = scorer.inputs("churn", features, event.attributes)
    assert fraud["attr_mcc"] == "5411" and fraud["attr_merchant_risk"] == 0.7
    assert fraud["profile_tenure_months"] == 40.0
    assert "attr_campaign" not in fraud and "profile_occupation" not in fraud
    assert offers["attr_campaign"] == "spring" and offers["profile_occupation"] == "nurse"
    assert "attr_mcc" not in offers
    assert not any(k.startswith(("attr_", "profile_")) for k in churn)  # churn: built-in only
    # The trainer keeps what each model read from the audit record, profile fields included.
    audit = {"features": features, "event": event.to_dict(), "customer_id": "c1", "actions": []}
    kept = inputs_of(audit, scorer.specs)
    assert kept["f"]["profile.tenure_months"] == 40 and kept["a"] == {
        "mcc": "5411", "merchant_risk": 0.7, "campaign": "spring"
    }  # fmt: skip


def test_the_example_file_and_the_readme_snippet_are_valid() -> None:
    load_feature_config(str(EXAMPLE))
    snippet = re.search(r"### Models' inputs.*?```yaml\n(.*?)```", README.read_text(), flags=re.S)
    assert snippet is not None
    parse_feature_config(snippet.group(1), "README.md")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("frod: {profile: {x: number}}", "test.yaml: frod: unknown model"),
        ("fraud: {features: [amount_ratio]}", "unknown feature 'amount_ratio'"),
        ("fraud: {attributes: {mcc: text}}", "fraud: attributes: mcc: type must be number or category"),
        ("fraud: {profile: {'bad name': number}}", "'bad name' is not a field name"),
        ("fraud: {inputs: {}}", "unknown key 'inputs'"),
        ("fraud: {features: []}", "fraud: a model needs at least one input"),
        ("fraud: [mcc]", "fraud: expected a mapping"),
        ("fraud: {profile: {a: number}", "not valid YAML"),
    ],
)
def test_a_bad_file_names_the_model_and_field(text: str, message: str) -> None:
    with pytest.raises(FeatureConfigError, match=re.escape(message)):
        parse_feature_config(text, "test.yaml")


def test_a_missing_file_and_the_replaced_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(FeatureConfigError, match="model features file"):
        load_feature_config(str(tmp_path / "nope.yaml"))
    with pytest.raises(
        ConfigError, match="BEACON_MODEL_ATTRIBUTES_NUMERIC: replaced by BEACON_MODEL_FEATURES"
    ):
        Settings.build(env={"BEACON_MODEL_ATTRIBUTES_NUMERIC": "mcc"})


def test_a_snapshot_learned_on_other_inputs_is_refused() -> None:
    """A model learned before the features file changed would read the new inputs as
    missing: the worker refuses it (the watcher keeps the running one) instead."""
    from models.errors import ModelError
    from models.registry import build

    specs = parse_feature_config(CONFIG, "test.yaml")
    scorer = ModelScorer(specs)
    scorer.install("churn", "churn-v2", build("churn"))  # churn's inputs did not change
    with pytest.raises(ModelError, match="fraud fraud-v2: it was learned on other inputs"):
        scorer.install("fraud", "fraud-v2", build("fraud"))
    scorer.install("fraud", "fraud-v3", build("fraud", specs))
    assert scorer.versions["fraud"] == "fraud-v3"
