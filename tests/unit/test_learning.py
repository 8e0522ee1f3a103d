"""The registered models learn planted patterns online (test-then-train), on data the
project generates itself: fraud well above its base rate, offer affinities by segment."""

from __future__ import annotations

import math
import pickle
import random
from pathlib import Path

from models.learner import Learner
from models.registry import REGISTRY, build


def _learner() -> Learner:
    return Learner({n: build(n) for n in REGISTRY}, {n: REGISTRY[n].features for n in REGISTRY})


def _transaction(rng: random.Random, fraud: bool) -> dict[str, object]:
    # Planted pattern: a device shared by many customers, right after a password reset.
    # The unsupervised baseline does not look at either, so only the labels can teach it.
    f: dict[str, object] = {
        "log_amount": rng.uniform(2, 7),
        "amount_ratio_30d": rng.uniform(0, 2),
        "new_device": int(rng.random() < 0.05),
        "night": int(rng.random() < 0.1),
        "channel": rng.choice(["atm", "internet", "mobile"]),
        "type": rng.choice(["withdrawal", "transfer", "card_payment"]),
        "device_customers_24h": rng.randint(1, 2),
        "secs_since_password_reset": -1.0 if rng.random() < 0.8 else rng.uniform(3600, 10**6),
    }
    if fraud:
        f["device_customers_24h"] = rng.randint(4, 12)
        f["secs_since_password_reset"] = rng.uniform(30, 900)
    return f


def test_fraud_is_learned_well_above_its_base_rate() -> None:
    rng = random.Random(5)
    learner = _learner()
    for _ in range(20_000):
        fraud = rng.random() < 1 / 200
        learner.learn("fraud", _transaction(rng, fraud), {}, fraud, delay_s=86400.0)
    q = learner.quality["fraud"].summary()
    base = q["base_rate"]
    assert 0.002 < base < 0.01
    assert q["pr_auc"] > 10 * base and q["roc_auc"] > 0.9
    # The challenger saw the same labels in shadow, so the two can be compared.
    shadow = learner.quality["fraud_challenger"].summary()
    assert shadow["labels"] == q["labels"] and shadow["roc_auc"] is not None


def test_a_planted_offer_affinity_ranks_first_for_its_segment() -> None:
    rng = random.Random(9)
    learner = _learner()
    affinity = {"young": "round_up", "affluent": "mortgage_review", "mass": "overdraft"}
    offers = tuple(sorted(set(affinity.values())))
    for _ in range(6000):
        segment = rng.choice(list(affinity))
        offer = rng.choice(offers)
        accepted = rng.random() < (0.35 if affinity[segment] == offer else 0.03)
        features = {"segment": segment, "channel": "mobile", "type": "login", "n_30d": rng.randint(1, 40)}
        learner.learn("offers", features, {}, accepted, delay_s=600.0, offer=offer)
    model = learner.models["offers"]
    spec = REGISTRY["offers"].features
    for segment, best in affinity.items():
        x = spec.extract({"segment": segment, "channel": "mobile", "type": "login", "n_30d": 10}, {})
        ranked = sorted(model.predict_offers(x, offers).items(), key=lambda kv: -kv[1])
        assert ranked[0][0] == best, (segment, ranked)


def test_the_challenger_is_scored_in_shadow_and_recorded() -> None:
    from models.scorer import ModelScorer

    scorer = ModelScorer()
    scores = scorer.score({"new_device": 1}, ("gold",))
    assert set(scores.to_dict()["shadow"]) == {"fraud_challenger"}
    assert scorer.versions["fraud_challenger"] == "fraud_challenger-fresh"


def _fraud_x(rng: random.Random, fraud: bool) -> dict[str, object]:
    return REGISTRY["fraud"].features.extract(_transaction(rng, fraud), {})


def test_fraud_learns_a_label_and_takes_it_back() -> None:
    """A provisional negative that a late report corrects: ``learn_one(x, False, w=-1)``
    steps back on the same inputs, so the counts and the score return to where they were."""
    rng = random.Random(3)
    model = build("fraud")
    for i in range(300):
        model.learn_one(_fraud_x(rng, i % 20 == 0), i % 20 == 0)
    x = _fraud_x(rng, True)
    before = model.predict_proba_one(x)[True]
    counts = (model.n_labels, model.n_positive)
    model.learn_one(x, False)
    assert model.predict_proba_one(x)[True] < before
    model.learn_one(x, False, w=-1.0)
    assert (model.n_labels, model.n_positive) == counts
    assert abs(model.predict_proba_one(x)[True] - before) < 0.05 * before


def test_fraud_ranks_customers_with_no_history_before_any_label() -> None:
    """Nothing known about the customer: the score is no longer one constant for all."""
    model = build("fraud")
    spec = REGISTRY["fraud"].features
    scores = [model.predict_proba_one(spec.extract({"log_amount": math.log1p(a)}, {}))[True]
              for a in (5.0, 40.0, 300.0, 2500.0)]  # fmt: skip
    assert scores == sorted(scores) and len(set(scores)) == 4
    assert max(scores) < 0.01  # a tie-breaker, not a verdict


def test_a_fraud_snapshot_pickled_before_the_redesign_still_loads() -> None:
    """A snapshot in Redis from the blend design (tests/data/README.md) loads as the new
    model: what its supervised part learned carries over, recalibrated for its positive
    weight of 30, and it passes the check suite and keeps learning."""
    from models.checks import check_learns, check_pickle_round_trip
    from models.online import FraudRisk

    loaded = pickle.loads((Path(__file__).parents[1] / "data" / "fraud_blend_v0.pickle").read_bytes())
    assert type(loaded) is FraudRisk and (loaded.n_labels, loaded.n_positive) == (400, 40)
    spec = REGISTRY["fraud"].features
    card = {"log_amount": 5.0, "channel": "mobile", "type": "card_payment"}
    shared = loaded.predict_proba_one(spec.extract({**card, "device_customers_24h": 6.0}, {}))[True]
    own = loaded.predict_proba_one(spec.extract({**card, "device_customers_24h": 1.0}, {}))[True]
    assert shared > 0.5 and own < 0.01  # the pattern it learned (the blend had it at 0.542)
    rng = random.Random(4)
    samples = [(_fraud_x(rng, i % 3 == 0), i % 3 == 0) for i in range(20)]
    check_learns(loaded, samples)
    check_pickle_round_trip(loaded, [x for x, _ in samples])
