"""The HTTP API of a real worker process (real Redis and broker behind it)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import orjson
import pytest
import redis

from engine.ops.launcher import WorkerProcess
from engine.settings import Settings
from tests.helpers import Record, consume_until, isolated, running_worker

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def worker(infra: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    with running_worker(isolated(infra), tmp_path_factory.mktemp("http")) as w:
        yield w


@pytest.fixture
def http(worker: WorkerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=worker.url, timeout=5) as client:
        yield client


def event(event_id: str, **kw: object) -> dict[str, object]:
    body: dict[str, object] = {
        "event_id": event_id,
        "customer_id": "H1",
        "channel": "internet",
        "type": "login",
        "ts": time.time(),
        "device_id": "laptop",
    }
    body.update(kw)
    return body


def test_decision_then_same_decision_on_repeat(http: httpx.Client) -> None:
    body = orjson.dumps(event("h-1"))
    first = http.post("/v1/decisions", content=body)
    assert first.status_code == 200, first.text
    d = first.json()
    assert d["event_id"] == "h-1" and d["channel"] == "internet" and d["actions"]
    assert {"score", "verdict"} <= set(d["risk"]) and d["versions"]["rules"]
    assert {"state_ms", "models_ms", "rules_ms", "decide_ms"} <= set(d["timing_ms"])
    again = http.post("/v1/decisions", content=body)
    assert again.status_code == 200 and again.content == first.content
    assert again.headers["Beacon-Replayed"] == "true"


def test_a_repeat_after_its_answer_expired_is_acknowledged(http: httpx.Client, worker: WorkerProcess) -> None:
    """Issue 16: past BEACON_DEDUPE_ANSWER_TTL_S (the answer's key gone, as its TTL does)
    and within BEACON_DEDUPE_TTL_S, a repeat is a repeat: 200, Beacon-Replayed, no actions,
    a machine-readable code; another payload is still refused."""
    body = orjson.dumps(event("h-late"))
    assert http.post("/v1/decisions", content=body).status_code == 200
    s = worker.settings
    with redis.Redis.from_url(s.redis_url) as r:
        assert r.delete(f"{s.key_prefix}:{{H1}}:dd:internet:h-late") == 1
    late = http.post("/v1/decisions", content=body)
    assert late.status_code == 200 and late.headers["Beacon-Replayed"] == "true"
    got = late.json()
    assert got["replay"]["code"] == "answer_expired" and got["actions"] == [] and got["event_id"] == "h-late"
    other = http.post("/v1/decisions", content=orjson.dumps(event("h-late", type="logout")))
    assert other.status_code == 409 and other.json()["error"]["code"] == "conflicting_replay"


def test_explain_gives_every_candidate_and_rule_with_values(http: httpx.Client) -> None:
    profile = {"income_band": "low", "products": ["current"], "kyc_risk": "low"}
    assert http.put("/v1/customers/H8/profile", content=orjson.dumps(profile)).status_code == 200
    first = orjson.dumps(event("h-8", customer_id="H8"))
    short = http.post("/v1/decisions", content=first).json()
    # The channel's answer is lean: what did not make it, and why, is for ?explain=true.
    assert "explain" not in short and "dropped" not in short
    asked = http.post("/v1/decisions?explain=true", content=first)  # a repeat: the same payload
    assert asked.headers["Beacon-Replayed"] == "true"  # a repeat says where its explanation is
    again = http.post("/v1/decisions?explain=true", content=orjson.dumps(event("h-8c", customer_id="H8")))
    gold = next(d for d in again.json()["explain"]["dropped"] if d["id"] == "credit_card_gold")
    assert gold["stage"] == "eligibility" and gold["why"]
    body = orjson.dumps(event("h-8b", customer_id="H8", channel="atm", type="pin_failure", terminal_id="T8"))
    for i in range(3):
        full = http.post(
            "/v1/decisions?explain=true", content=body.replace(b"h-8b", f"h-8b{i}".encode())
        ).json()
    explain = full["explain"]
    assert {"kept", "dropped", "rules", "typologies"} <= set(explain)
    fired = {r["id"]: r for r in explain["rules"]}
    assert fired["pin_bruteforce"]["values"]["state.pin_failures_1h"] == 3
    assert all("values" in d for d in explain["dropped"])


def test_bad_event_is_400_with_code_and_field(http: httpx.Client) -> None:
    r = http.post("/v1/decisions", content=orjson.dumps(event("h-2", amount="lots")))
    assert r.status_code == 400
    assert r.json()["error"] == {
        "code": "wrong_type",
        "field": "amount",
        "message": "amount must be a number",
    }
    assert http.post("/v1/decisions", content=b"not json").json()["error"]["code"] == "invalid_json"
    r = http.post("/v1/decisions", content=b'{"x": "' + b"y" * 20000 + b'"}')
    assert r.status_code == 400 and r.json()["error"]["code"] == "too_large"


def test_rejected_event_changes_no_state(http: httpx.Client) -> None:
    http.post("/v1/decisions", content=orjson.dumps(event("h-3", customer_id="H3", channel="fax")))
    assert http.get("/v1/customers/H3").status_code == 404


def test_profile_and_unified_view(http: httpx.Client) -> None:
    profile = {"segment": "affluent", "income_band": "high", "products": ["current"], "kyc_risk": "low"}
    assert http.put("/v1/customers/H4/profile", content=orjson.dumps(profile)).status_code == 200
    bad = http.put("/v1/customers/H4/profile", content=orjson.dumps({"products": "current"}))
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "products"
    d = http.post("/v1/decisions", content=orjson.dumps(event("h-4", customer_id="H4"))).json()
    assert d["actions"][0]["id"] == "credit_card_gold"
    view = http.get("/v1/customers/H4").json()
    assert view["profile"] == profile
    assert view["recent_interactions"][0]["event_id"] == "h-4"
    assert view["recent_decisions"][0]["decision_id"] == d["decision_id"]
    assert view["windows"]["24h"]["all"]["count"] == 1
    assert http.get("/v1/customers/nobody").status_code == 404


def test_label_events_are_acknowledged_not_decided(http: httpx.Client) -> None:
    """Issue 15, item 5: a fraud report and an offer response through the public API get
    an acknowledgement (no offer, no score) and leave the customer's activity alone."""
    profile = {"income_band": "high", "products": ["current"], "kyc_risk": "low"}
    assert http.put("/v1/customers/H9/profile", content=orjson.dumps(profile)).status_code == 200
    shown = http.post("/v1/decisions", content=orjson.dumps(event("h-9", customer_id="H9"))).json()
    for i in range(3):
        withdrawal = event(f"h-9w{i}", customer_id="H9", channel="atm", type="withdrawal", amount=50.0)
        http.post("/v1/decisions", content=orjson.dumps(withdrawal))
    before = http.get("/v1/customers/H9").json()
    report = event("h-9f", customer_id="H9", type="fraud_report", device_id="elsewhere",
                   attributes={"ref_event_id": "h-9w0", "ref_channel": "atm"})  # fmt: skip
    answer = event("h-9r", customer_id="H9", channel="mobile", type="offer_response", device_id="phone",
                   attributes={"decision_id": shown["decision_id"], "action_id": "credit_card_gold",
                               "response": "accepted"})  # fmt: skip
    for body in (report, answer):
        got = http.post("/v1/decisions", content=orjson.dumps(body))
        assert got.status_code == 200, got.text
        d = got.json()
        assert d["feedback"] is True and d["risk"] == {
            "score": 0.0, "verdict": "allow", "reasons": ["label event: not decided"], "typologies": []
        }  # fmt: skip
        assert [a["kind"] for a in d["actions"]] == ["fallback"] and d["alerts"] == []
        assert "models" not in d["versions"]  # no model was asked
        again = http.post("/v1/decisions", content=orjson.dumps(body))
        assert again.content == got.content and again.headers["Beacon-Replayed"] == "true"
    after = http.get("/v1/customers/H9").json()
    for part in ("windows", "last_seen", "devices"):
        assert after[part] == before[part], part
    assert after["windows"]["1h"]["all"]["count"] == 4
    assert [e["event_id"] for e in after["recent_interactions"][:2]] == ["h-9r", "h-9f"]


def test_the_unified_view_gives_numbers_as_numbers(http: httpx.Client) -> None:
    """Issue 19, item 3: ``last_seen.ts`` was ``"1796300783.7089393"`` and ``lat``
    ``"55.972299999999997"``: strings where a channel expects numbers."""
    ts = time.time()
    body = event("h-num", customer_id="HN", geo={"lat": 55.9723, "lon": -3.1883}, ts=ts)
    assert http.post("/v1/decisions", json=body).status_code == 200
    last = http.get("/v1/customers/HN").json()["last_seen"]
    assert last["ts"] == pytest.approx(ts) and isinstance(last["ts"], float)
    assert (last["lat"], last["lon"]) == (55.9723, -3.1883)
    assert last["id"] == "h-num" and last["ch"] == "internet"


def test_alerts_are_kept_in_the_customer_view(http: httpx.Client) -> None:
    for i in range(3):
        http.post(
            "/v1/decisions",
            content=orjson.dumps(event(f"h-5-{i}", customer_id="H5", channel="atm", type="pin_failure",
                                       terminal_id="T1")),
        )  # fmt: skip
    view = http.get("/v1/customers/H5").json()
    assert [a["rule_id"] for a in view["open_alerts"]] == ["pin_bruteforce"]


def test_health_readiness_and_metrics(http: httpx.Client) -> None:
    assert http.get("/healthz").status_code == 200
    ready = http.get("/readyz").json()
    assert ready["ready"] and all(ready["checks"].values())
    http.post("/v1/decisions", content=orjson.dumps(event("h-6")))
    text = http.get("/metrics").text
    assert 'beacon_decision_latency_seconds_bucket{le="0.001",path="http"}' in text
    assert 'beacon_events_total{channel="internet",outcome="decided",path="http",type="login"}' in text
    assert 'beacon_dlq_total{path="http",reason="wrong_type"}' in text
    assert "beacon_batch_size_count" in text and 'beacon_stage_latency_seconds_count{stage="state"}' in text


async def test_audit_record_and_alert_are_published(worker: WorkerProcess) -> None:
    s = worker.settings
    async with httpx.AsyncClient(base_url=worker.url, timeout=5) as client:
        for i in range(3):
            body = event(f"h-7-{i}", customer_id="H7", channel="atm", type="pin_failure", terminal_id="T2")
            r = await client.post("/v1/decisions", content=orjson.dumps(body))
            assert r.status_code == 200
    topics = [s.topic("decisions.audit"), s.topic("risk.alerts")]

    def seen(records: list[Record]) -> bool:
        return any(t.endswith("risk.alerts") and b"H7" in v for t, _, v, _ in records)

    out = await consume_until(s.kafka_bootstrap, topics, 0, timeout=30, done=seen)
    audits = [orjson.loads(v) for t, _, v, _ in out if t.endswith("decisions.audit") and b'"H7"' in v]
    alerts = [orjson.loads(v) for t, _, v, _ in out if t.endswith("risk.alerts") and b'"H7"' in v]
    assert {a["event_id"] for a in audits} == {"h-7-0", "h-7-1", "h-7-2"}
    assert all({"features", "scores", "event", "versions", "explain"} <= set(a) for a in audits)
    assert [a["rule_id"] for a in alerts] == ["pin_bruteforce"]
    assert alerts[0]["conditions"]["values"]["state.pin_failures_1h"] == 3 and alerts[0]["versions"]["rules"]
    assert alerts[0]["evidence"]["pin_failures_1h"] == 3 and alerts[0]["decision_id"]
