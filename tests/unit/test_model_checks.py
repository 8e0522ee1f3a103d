"""The shared model check suite: it passes a well-built River model and catches bad ones."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from river import compose, linear_model, preprocessing, tree

from models.checks import (
    check_input_not_mutated,
    check_learns,
    check_pickle_round_trip,
    check_sane_prior,
    run_all,
)
from models.registry import REGISTRY, build

BASE_RATE = 0.02


def good_model() -> Any:
    """Numbers scaled, categories one-hot, a prior at the expected base rate."""
    numeric = compose.Select("amount", "n_1h") | preprocessing.StandardScaler()
    categorical = compose.Select("channel") | preprocessing.OneHotEncoder()
    return (numeric + categorical) | linear_model.LogisticRegression(
        intercept_init=math.log(BASE_RATE / (1 - BASE_RATE))
    )


def make_samples(n: int = 200, seed: int = 5) -> list[tuple[dict[str, Any], bool]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        amount = rng.lognormvariate(4, 1)
        x = {"amount": amount, "n_1h": float(rng.randint(0, 6)), "channel": rng.choice(["atm", "mobile"])}
        out.append((x, amount > 150 and rng.random() < 0.5))
    return out


SAMPLES = make_samples()
XS = [x for x, _ in SAMPLES]
NUMERIC = {"amount": 120.0, "n_1h": 2.0}  # what a bare LogisticRegression can take


class Prior:
    """A hand-written model: a learned log-odds bias, nothing else."""

    def __init__(self, bias: float = -4.0) -> None:
        self.bias = bias

    def predict_proba_one(self, x: dict[str, Any]) -> dict[bool, float]:
        p = 1 / (1 + math.exp(-self.bias))
        return {False: 1 - p, True: p}

    def learn_one(self, x: dict[str, Any], y: bool) -> None:
        self.bias += 0.1 if y else -0.01


class MutatesOnLearn(Prior):
    def learn_one(self, x: dict[str, Any], y: bool) -> None:
        x.pop("channel", None)
        x["seen"] = True
        super().learn_one(x, y)


class MutatesOnPredict(Prior):
    def predict_proba_one(self, x: dict[str, Any]) -> dict[bool, float]:
        x["amount"] = float(x.get("amount", 0.0)) * 2
        return super().predict_proba_one(x)


class MutatesNested(Prior):
    def learn_one(self, x: dict[str, Any], y: bool) -> None:
        x["tags"].append("learned")
        super().learn_one(x, y)


class ForgetsWhenPickled(Prior):
    """Pickles as a fresh model: what learned state looks like when __getstate__ is wrong."""

    def __reduce__(self) -> tuple[type, tuple[()]]:
        return (type(self), ())


class NeverLearns(Prior):
    def learn_one(self, x: dict[str, Any], y: bool) -> None:
        return None


class Overflows(Prior):
    def predict_proba_one(self, x: dict[str, Any]) -> dict[bool, float]:
        p = 1 / (1 + math.exp(-self.bias))
        return {True: p * 100}


class DoesNotSumToOne(Prior):
    def predict_proba_one(self, x: dict[str, Any]) -> dict[bool, float]:
        return {False: 0.5, True: 0.1}


# -- a good model passes everything --------------------------------------------------------


def test_a_well_built_river_model_passes_the_suite() -> None:
    assert run_all(good_model, SAMPLES) == [
        "sane_prior", "input_not_mutated", "learns", "pickle_round_trip", "pickle_round_trip_fresh",
    ]  # fmt: skip


def test_a_hand_written_model_passes_the_suite() -> None:
    run_all(Prior, SAMPLES)


def test_the_prior_can_be_checked_on_an_ordinary_input() -> None:
    class Rules(Prior):  # starts from a rule of thumb: big amounts look risky
        def predict_proba_one(self, x: dict[str, Any]) -> dict[bool, float]:
            p = 0.9 if x.get("amount", 0.0) > 1000 else 0.01
            return {False: 1 - p, True: p}

        def learn_one(self, x: dict[str, Any], y: bool) -> None:
            self.bias += 1  # (unused by predict: it would fail check_learns)

    big_first = [({"amount": 5000.0}, True), *SAMPLES]
    with pytest.raises(AssertionError, match=r"check_sane_prior: Rules: .*P\(True\) = 0\.9"):
        run_all(Rules, big_first)
    with pytest.raises(AssertionError, match="check_learns: Rules"):  # past the prior, on to the next check
        run_all(Rules, big_first, prior_sample={"amount": 40.0})


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_registered_model_passes_the_suite(name: str) -> None:
    spec = REGISTRY[name].features
    rng = random.Random(name)
    samples = []
    for i in range(150):
        features: dict[str, Any] = {n: rng.uniform(0, 5) for n in spec.numeric}
        features.update({n: rng.choice(["mass", "affluent", "atm", "mobile"]) for n in spec.categorical})
        x = spec.extract(features, {"mcc": "5411"})
        if name == "offers":
            x["offer"] = rng.choice(["round_up", "overdraft"])
        samples.append((x, i % 9 == 0))
    ordinary = spec.extract({}, {})  # no signal at all: the prior alone
    if name == "offers":
        ordinary["offer"] = "round_up"
    run_all(lambda: build(name), samples, prior_sample=ordinary)


def test_the_pickle_check_compares_a_trained_model() -> None:
    model = good_model()
    for x, y in SAMPLES:
        model.learn_one(x, y)
    check_pickle_round_trip(model, XS)


# -- each check bites -----------------------------------------------------------------------


def test_a_bare_river_logistic_regression_has_no_prior() -> None:
    # Zero weights and intercept: exactly 0.5, and hi is exclusive, so it fails.
    with pytest.raises(AssertionError, match=r"check_sane_prior: LogisticRegression: .*P\(True\) = 0\.5"):
        check_sane_prior(linear_model.LogisticRegression(), NUMERIC)
    # So does the textbook pipeline: scaling does not give it a prior either.
    pipeline = (
        compose.Select("amount", "n_1h") | preprocessing.StandardScaler() | linear_model.LogisticRegression()
    )
    with pytest.raises(AssertionError, match=r"intercept_init"):
        check_sane_prior(pipeline, XS[0])
    # With a prior at the base rate, it passes.
    check_sane_prior(good_model(), XS[0])


def test_sane_prior_bounds_are_the_callers() -> None:
    check_sane_prior(linear_model.LogisticRegression(), NUMERIC, hi=0.6)  # a balanced target
    with pytest.raises(AssertionError, match=r"outside \[0\.05, 0\.5\)"):
        check_sane_prior(Prior(bias=-4.0), XS[0], lo=0.05)


def test_a_model_with_no_prediction_before_learning_fails_the_prior_check() -> None:
    with pytest.raises(
        AssertionError, match=r"HoeffdingTreeClassifier: a fresh model, .*returned \{\}, with no P\(True\)"
    ):
        check_sane_prior(tree.HoeffdingTreeClassifier(), XS[0])


@pytest.mark.parametrize(
    ("model_class", "method", "detail"),
    [
        (MutatesOnLearn, "learn_one", "added ['seen'], removed ['channel'], changed []"),
        (MutatesOnPredict, "predict_proba_one", "added [], removed [], changed ['amount']"),
    ],
)
def test_mutating_the_input_is_caught(model_class: type[Prior], method: str, detail: str) -> None:
    with pytest.raises(AssertionError) as caught:
        check_input_not_mutated(model_class(), XS[:5])
    message = str(caught.value)
    assert message.startswith(f"check_input_not_mutated: {model_class.__name__}: {method} changed sample 0")
    assert detail in message
    assert XS[0] == SAMPLES[0][0] and "seen" not in XS[0]  # the caller's samples are untouched


def test_mutating_a_nested_value_is_caught() -> None:
    samples = [{"amount": 1.0, "tags": ["a"]}]
    with pytest.raises(AssertionError, match=r"learn_one changed sample 0 .*changed \['tags'\]"):
        check_input_not_mutated(MutatesNested(), samples)
    assert samples == [{"amount": 1.0, "tags": ["a"]}]


def test_run_all_reports_the_mutation() -> None:
    with pytest.raises(AssertionError, match="check_input_not_mutated: MutatesOnLearn"):
        run_all(MutatesOnLearn, SAMPLES)


def test_losing_state_in_pickle_is_caught() -> None:
    model = ForgetsWhenPickled()
    check_pickle_round_trip(model, XS[:3])  # untrained, nothing to lose yet
    for x, y in SAMPLES:
        model.learn_one(x, y)
    with pytest.raises(
        AssertionError, match=r"check_pickle_round_trip: ForgetsWhenPickled: sample 0 .*unpickled copy"
    ):
        check_pickle_round_trip(model, XS[:3])


def test_an_unpicklable_model_is_caught() -> None:
    model = Prior()
    model.hook = lambda: None  # type: ignore[attr-defined]
    with pytest.raises(AssertionError, match="check_pickle_round_trip: Prior: pickling failed"):
        check_pickle_round_trip(model, XS[:1])


def test_a_model_that_does_not_learn_is_caught() -> None:
    with pytest.raises(
        AssertionError, match=r"check_learns: NeverLearns: learning 200 samples changed no prediction"
    ):
        check_learns(NeverLearns(), SAMPLES)


def test_probabilities_out_of_range_are_caught() -> None:
    with pytest.raises(
        AssertionError, match=r"check_learns: Overflows: before learning, P\(True\) = .* is not a probability"
    ):
        check_learns(Overflows(), SAMPLES)
    with pytest.raises(AssertionError, match=r"P\(False\) \+ P\(True\) = 0\.6, not 1"):
        check_sane_prior(DoesNotSumToOne(), XS[0])


def test_learned_predictions_stay_probabilities() -> None:
    class Explodes(Prior):
        def learn_one(self, x: dict[str, Any], y: bool) -> None:
            self.bias = math.nan

    with pytest.raises(AssertionError, match=r"after learning, P\(True\) = nan is not a probability"):
        check_learns(Explodes(), SAMPLES[:3])


def test_a_model_that_raises_fails_the_check_with_the_sample_named() -> None:
    # A bare LogisticRegression cannot take a categorical value.
    with pytest.raises(
        AssertionError,
        match=r"check_sane_prior: LogisticRegression: predict_proba_one .*'atm'.* raised TypeError",
    ):
        check_sane_prior(linear_model.LogisticRegression(), XS[0])
    with pytest.raises(AssertionError, match=r"check_learns: LogisticRegression: .*raised TypeError"):
        check_learns(linear_model.LogisticRegression(), SAMPLES)


def test_misuse_is_a_value_error_not_a_failed_check() -> None:
    with pytest.raises(ValueError, match="2 samples but 1 labels"):
        check_input_not_mutated(Prior(), XS[:2], [True])
    with pytest.raises(ValueError, match="at least one"):
        check_learns(Prior(), [])
    with pytest.raises(ValueError, match="at least one"):
        run_all(Prior, [])
    with pytest.raises(ValueError, match="at least one sample"):
        check_pickle_round_trip(Prior(), [])
    with pytest.raises(ValueError, match="at least one sample"):
        check_input_not_mutated(Prior(), [])
