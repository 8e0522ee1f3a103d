"""Raw model scores on request (``?scores=true``, ``?explain=true``) and outbound offer
scoring (``POST /v1/offers/score``) on a real worker, against real Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from engine.domain.policy import in_control_group
from engine.ops.launcher import WorkerProcess
from engine.settings import Settings
from engine.store.redisio import connect
from tests.helpers import isolated, running_worker

pytestmark = pytest.mark.integration
RICH = {"income_band": "high", "products": ["current"], "kyc_risk": "low", "tenure_months": 30}


@pytest.fixture(scope="module")
def settings(infra: Settings) -> Settings:
    return isolated(infra)


@pytest.fixture(scope="module")
def worker(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    with running_worker(settings, tmp_path_factory.mktemp("scores")) as w:
        yield w


@pytest.fixture
def http(worker: WorkerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=worker.url, timeout=5) as client:
        yield client


def event(event_id: str, customer: str, **kw: object) -> bytes:
    body: dict[str, object] = {"event_id": event_id, "customer_id": customer, "channel": "internet",
                               "type": "login", "ts": time.time(), "device_id": f"dev-{customer}"}  # fmt: skip
    body.update(kw)
    return orjson.dumps(body)


def _profile(http: httpx.Client, customer: str, profile: dict[str, Any] = RICH) -> None:
    assert http.put(f"/v1/customers/{customer}/profile", content=orjson.dumps(profile)).status_code == 200


def test_default_answer_has_no_scores_block(http: httpx.Client) -> None:
    _profile(http, "S0")
    d = http.post("/v1/decisions", content=event("s-0", "S0")).json()
    assert "scores" not in d and "explain" not in d


def test_scores_block_shows_raw_model_scores_apart_from_the_risk_score(http: httpx.Client) -> None:
    _profile(http, "S1")
    for i in range(3):  # three PIN failures: a typology scores, so risk.score is not the model's
        body = event(f"s-1-{i}", "S1", channel="atm", type="pin_failure", terminal_id="T1", device_id="card")
        d = http.post("/v1/decisions?scores=true", content=body).json()
    scores = d["scores"]
    assert {"fraud", "churn", "challengers", "offers"} <= set(scores)
    assert d["risk"]["score"] >= 0.5 > scores["fraud"] > 0.0
    # The model's own number, not rounded to 6 decimals (the fresh fraud model answers a
    # logistic function of the customer's deviation, which has many).
    assert scores["fraud"] != round(scores["fraud"], 6)
    assert all(isinstance(v, float) for v in scores["challengers"].values())
    assert "explain" not in d


def test_scores_block_lists_every_candidate_with_its_propensity(http: httpx.Client) -> None:
    _profile(http, "S2")
    first = event("s-2", "S2")
    d = http.post("/v1/decisions?scores=true", content=first).json()
    offers = {o["id"]: o for o in d["scores"]["offers"]}
    shown = [a["id"] for a in d["actions"]]
    assert "credit_card_gold" in shown and offers["credit_card_gold"]["shown"] is True
    assert offers["credit_card_gold"]["propensity"] > 0 and offers["credit_card_gold"]["score"] > 0
    # Offers the channel was not shown are there too, with the stage that dropped them.
    loan = offers["personal_loan_preapproved"]
    assert loan["shown"] is False and loan["stage"] == "eligibility" and loan["why"]
    assert isinstance(loan["propensity"], float)
    # ?explain=true carries the same block beside the explanation.
    full = http.post("/v1/decisions?explain=true", content=event("s-2b", "S2")).json()
    assert "explain" in full and {o["id"] for o in full["scores"]["offers"]} == set(offers)
    # A repeat has no decision in hand: it says where the scores are.
    again = http.post("/v1/decisions?scores=true", content=first)
    assert again.headers["Beacon-Replayed"] == "true" and "note" in again.json()["scores"]


def _control_customer() -> str:
    return next(f"CG{i}" for i in range(10_000) if in_control_group(f"CG{i}", 0.02))


def _score(http: httpx.Client, body: dict[str, Any]) -> httpx.Response:
    return http.post("/v1/offers/score", content=orjson.dumps(body))


def test_outbound_scores_an_offer_a_control_group_customer_is_never_shown(http: httpx.Client) -> None:
    cust = _control_customer()
    _profile(http, cust)
    d = http.post("/v1/decisions", content=event("s-3", cust)).json()
    assert "credit_card_gold" not in [a["id"] for a in d["actions"]]  # held out of sales offers
    r = _score(http, {"customer_id": cust, "channel": "call_centre",
                      "offers": ["credit_card_gold", "complaint_follow_up", "no_such_offer"]})  # fmt: skip
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["customer_id"] == cust and out["channel"] == "call_centre" and out["control_group"] is True
    assert {"fraud", "churn"} <= set(out["scores"]) and out["risk"]["verdict"] == "allow"
    by_id = {o["id"]: o for o in out["offers"]}
    gold = by_id["credit_card_gold"]
    assert gold["propensity"] > 0 and gold["value"] == 120 and gold["score"] > 0 and gold["passes"] is False
    assert [f["code"] for f in gold["failed"]] == ["control_group"]
    assert gold["checks"]["eligibility"] == "pass" and gold["checks"]["control_group"] == "fail"
    assert gold["checks"]["applicability"] == "skipped"  # no interaction: said, not hidden
    assert any(s["code"] == "no_interaction" for s in gold["skipped"])
    follow_up = by_id["complaint_follow_up"]  # a service message: not held out, but not eligible
    assert follow_up["checks"]["control_group"] == "pass"
    assert [f["code"] for f in follow_up["failed"]] == ["not_eligible"]
    assert by_id["no_such_offer"] == {"id": "no_such_offer", "status": "unknown_offer"}
    ranks = [o["rank"] for o in out["offers"] if "rank" in o]
    assert ranks == sorted(ranks) and ranks[0] == 1


def test_outbound_reports_contact_policy_after_a_decline(http: httpx.Client) -> None:
    _profile(http, "S4")
    d = http.post("/v1/decisions", content=event("s-4", "S4")).json()
    assert d["actions"][0]["id"] == "credit_card_gold"
    declined = event("s-4r", "S4", type="offer_response",
                     attributes={"action_id": "credit_card_gold", "response": "declined",
                                 "decision_id": d["decision_id"]})  # fmt: skip
    assert http.post("/v1/decisions", content=declined).status_code == 200
    out = _score(http, {"customer_id": "S4", "channel": "internet", "offers": ["credit_card_gold"],
                        "event_type": "login"}).json()  # fmt: skip
    gold = out["offers"][0]
    assert gold["checks"]["applicability"] == "pass" and gold["checks"]["contact_policy"] == "fail"
    assert "decline_cooldown" in [f["code"] for f in gold["failed"]]
    assert gold["propensity"] > 0 and gold["passes"] is False


async def _keys(settings: Settings, customer: str) -> dict[str, tuple[bytes | None, int]]:
    client = connect(settings)
    try:
        found: dict[str, tuple[bytes | None, int]] = {}
        async for key in client.scan_iter(match=f"{settings.key_prefix}:{{{customer}}}*"):
            found[key.decode()] = (await client.dump(key), await client.ttl(key))
        found["caps"] = (await client.dump(f"{settings.key_prefix}:caps:" + time.strftime("%Y%m%d")), 0)
        return found
    finally:
        await client.aclose()


def test_outbound_changes_nothing(http: httpx.Client, settings: Settings) -> None:
    _profile(http, "S5")
    for i in range(2):
        http.post("/v1/decisions", content=event(f"s-5-{i}", "S5"))
    view, keys = http.get("/v1/customers/S5").json(), asyncio.run(_keys(settings, "S5"))
    assert len(keys) > 5
    for channel in ("internet", "call_centre", "atm"):
        r = _score(http, {"customer_id": "S5", "channel": channel, "event_type": "login",
                          "offers": ["credit_card_gold", "personal_loan_preapproved"]})  # fmt: skip
        assert r.status_code == 200, r.text
    assert http.get("/v1/customers/S5").json() == view
    after = asyncio.run(_keys(settings, "S5"))
    assert {k: v[0] for k, v in after.items()} == {k: v[0] for k, v in keys.items()}
    assert all(after[k][1] <= keys[k][1] for k in keys)  # no TTL refreshed


def test_outbound_refuses_bad_input_with_a_code(http: httpx.Client) -> None:
    _profile(http, "S6")
    cases: list[tuple[bytes, int, str]] = [
        (b"not json", 400, "invalid_json"),
        (b"[]", 400, "not_an_object"),
        (orjson.dumps({"channel": "internet", "offers": ["x"]}), 400, "missing_field"),
        (orjson.dumps({"customer_id": "S6", "channel": "fax", "offers": ["x"]}), 400, "unknown_channel"),
        (orjson.dumps({"customer_id": "S6", "channel": "internet", "offers": "x"}), 400, "wrong_type"),
        (orjson.dumps({"customer_id": "S6", "channel": "internet", "offers": []}), 400, "invalid_value"),
        (orjson.dumps({"customer_id": "S6", "channel": "internet", "offers": [1]}), 400, "wrong_type"),
        (
            orjson.dumps({"customer_id": "S6", "channel": "internet", "offers": ["x"] * 101}),
            400,
            "invalid_value",
        ),
        (
            orjson.dumps(
                {"customer_id": "S6", "channel": "internet", "offers": ["x"], "event_type": "dance"}
            ),
            400,
            "unknown_type",
        ),
        (
            orjson.dumps({"customer_id": "bad id!", "channel": "internet", "offers": ["x"]}),
            400,
            "invalid_value",
        ),
        (
            orjson.dumps({"customer_id": "nobody-at-all", "channel": "internet", "offers": ["x"]}),
            404,
            "unknown_customer",
        ),
    ]
    for body, status, code in cases:
        r = http.post("/v1/offers/score", content=body)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), body


def test_outbound_calls_are_counted(http: httpx.Client) -> None:
    _profile(http, "S7")
    _score(http, {"customer_id": "S7", "channel": "internet", "offers": ["credit_card_gold"]})
    _score(http, {"customer_id": "S7", "channel": "fax", "offers": ["credit_card_gold"]})
    page = http.get("/metrics").text
    assert 'beacon_offer_scoring_requests_total{outcome="scored"}' in page
    assert 'beacon_offer_scoring_requests_total{outcome="unknown_channel"}' in page


def test_outbound_counts_caps_as_the_commit_does(http: httpx.Client) -> None:
    _profile(http, "S8")
    shown = [http.post("/v1/decisions", content=event(f"s-8-{i}", "S8")).json() for i in range(3)]
    assert [["credit_card_gold" in [a["id"] for a in d["actions"]]] for d in shown] == [
        [True],
        [True],
        [False],
    ]
    out = _score(http, {"customer_id": "S8", "channel": "mobile", "offers": ["credit_card_gold"]}).json()
    gold = out["offers"][0]
    assert [f["code"] for f in gold["failed"]] == ["offer_cap"] and gold["checks"]["contact_policy"] == "fail"
    assert gold["failed"][0]["values"] == {"shown": 2, "max": 2, "window_s": 7 * 86400}
