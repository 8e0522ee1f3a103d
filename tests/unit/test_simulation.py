"""The demo's simulated traffic is plausible (issue 19, item 6) and its customers convert
with a planted uplift (issue 18): pure, seeded generators, checked on large samples."""

from __future__ import annotations

import itertools
import math
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import yaml

from engine.domain.features import haversine_km
from engine.ops.daylife import DAY, Town, day_legs, trip_of, where
from engine.ops.responses import PLANTED, Responses
from engine.ops.simulation import SCENARIOS, SKIMMED, Simulation

START = 1796256000.0  # a Thursday, 00:00 UTC
SPAN = 3 * DAY
N = 45_000


@pytest.fixture(scope="module")
def day() -> tuple[Simulation, list[dict]]:
    sim = Simulation(Town(3000, seed=5), seed=6)
    return sim, [sim.next_event(START + i * SPAN / N) for i in range(N)]


def _speed_kmh(a: dict, b: dict) -> float:
    """As the engine computes it (engine/domain/features.py): the gap floored at a minute."""
    km = haversine_km(a["geo"]["lat"], a["geo"]["lon"], b["geo"]["lat"], b["geo"]["lon"])
    return km / (max(b["ts"] - a["ts"], 60.0) / 3600.0)


def test_the_same_seeds_give_the_same_traffic() -> None:
    def run(seed: int) -> list[dict]:
        sim = Simulation(Town(300, seed=1), seed=seed)
        return [sim.next_event(START + i * 20.0) for i in range(2000)]

    assert run(2) == run(2)
    assert run(2) != run(3)


def test_no_customer_travels_faster_than_a_plane(day: tuple[Simulation, list[dict]]) -> None:
    sim, events = day
    last: dict[str, dict] = {}
    fastest, far = 0.0, 0
    for e in events:
        if "geo" not in e or e["event_id"] in sim.planted_events:
            continue
        prev = last.get(e["customer_id"])
        if prev is not None:
            fastest = max(fastest, _speed_kmh(prev, e))
            far += (
                haversine_km(prev["geo"]["lat"], prev["geo"]["lon"], e["geo"]["lat"], e["geo"]["lon"]) > 300
            )
        last[e["customer_id"]] = e
    assert fastest < 900.0
    assert far >= 5  # and yet they do travel: trips to other cities and abroad
    # Unfloored too: between any two instants of a day, no faster than a plane.
    c = sim.town.customers[0]
    for d in range(20790, 20830):
        for leg in day_legs(c, d):
            km = haversine_km(*leg.a, *leg.b)
            assert km / ((leg.t1 - leg.t0) / 3600.0) < 850.0, leg


def test_days_are_contiguous_and_end_at_home() -> None:
    town = Town(200, seed=3)
    for c in town.customers[:50]:
        for d in range(20790, 20804):
            legs = day_legs(c, d)
            assert legs[0].t0 == d * DAY and legs[-1].t1 == (d + 1) * DAY
            assert all(x.t1 == y.t0 and x.b == y.a for x, y in itertools.pairwise(legs))
            trip = trip_of(c, d // 7)
            if trip is None or not trip.depart_day <= d < trip.return_day:
                assert legs[-1].place == c.home
    travellers = {c.customer_id for c in town.customers for w in range(2970, 2990) if trip_of(c, w)}
    assert 0.3 < len(travellers) / len(town.customers) < 0.95  # a few trips a year each
    # At 3 am a customer is at home or away on a trip, never on the road.
    assert all(where(c, 20795 * DAY + 3 * 3600).mode == "stay" for c in town.customers)


def test_a_small_planted_share_of_fraud_scenarios(day: tuple[Simulation, list[dict]]) -> None:
    sim, events = day
    scenarios = sum(sim.sessions[k] for k in SCENARIOS)
    sessions = sum(sim.sessions.values())
    sd = math.sqrt(sim.fraud_share * (1 - sim.fraud_share) / sessions)
    assert abs(scenarios / sessions - sim.fraud_share) < 4 * sd, (scenarios, sessions)
    assert all(sim.sessions[k] > 0 for k in SCENARIOS)
    assert 0.001 < len(sim.planted_events) / len(events) < 0.01


def test_the_demo_opens_with_one_of_each_scenario() -> None:
    """The demo's first sessions are one of each planted scenario (so a new user sees
    alerts within minutes), each on a customer it fits; then the share as usual."""
    sim = Simulation(Town(3000, seed=1), seed=2, fraud_share=0.0, opening=SCENARIOS)
    events = [sim.next_event(START + 10 * 3600 + i / 8) for i in range(8 * 60)]
    assert sorted(sim.planted_customers.values()) == sorted(SCENARIOS)
    first = {
        sim.planted_customers[e["customer_id"]]
        for e in events[:20]
        if e["customer_id"] in sim.planted_customers
    }
    assert first == set(SCENARIOS)


def test_genuine_customers_bank_as_people_do(day: tuple[Simulation, list[dict]]) -> None:
    sim, events = day
    watch = set(yaml.safe_load(Path("rules/risk.yaml").read_text())["lists"]["watch_terminals"])
    assert watch >= set(SKIMMED.values())
    genuine = [e for e in events if e["event_id"] not in sim.planted_events]
    assert not {e.get("terminal_id") for e in genuine} & watch  # skimmers only in the scenario
    assert max(e["amount"] for e in genuine if e["type"] == "withdrawal") <= 400
    assert sum(e["type"] == "transfer" and e["amount"] >= 1000 for e in genuine) < 0.001 * len(genuine)
    pins: dict[str, list[float]] = defaultdict(list)
    for e in genuine:
        if e["type"] == "pin_failure":
            pins[e["customer_id"]].append(e["ts"])
    assert all(b - a > 3600 for ts in pins.values() for a, b in itertools.pairwise(ts))
    devices = Counter((e["customer_id"], e["device_id"]) for e in genuine if "device_id" in e)
    assert all(d.startswith(c + "-") and not d.startswith(c + "-x") for c, d in devices)
    per_customer = Counter(e["customer_id"] for e in genuine)
    assert per_customer.most_common(1)[0][1] < 60 * SPAN / DAY  # the busiest: tens a day, not thousands


@pytest.mark.parametrize("offer", sorted(PLANTED))
def test_conversions_follow_the_planted_rates(offer: str) -> None:
    r = Responses(seed=4, id_prefix="t")
    n = 40_000
    converted: Counter[str] = Counter()
    for i in range(n):
        cid, group = f"C{i:06d}", "shown" if i % 2 else "control"
        record = {
            "decision_id": f"d{i}",
            "customer_id": cid,
            "channel": "mobile",
            "event": {"type": "login"},
            "actions": [{"id": offer, "kind": "offer"}] if group == "shown" else [],
            "explain": {"dropped": [] if group == "shown" else [{"id": offer, "stage": "control_group"}]},
        }
        for _, ev in r.react(record, {"segment": "mass", "idle_balance": 8000}, 1000.0):
            if ev["type"] == "conversion":
                assert set(ev) == {
                    "event_id",
                    "customer_id",
                    "channel",
                    "type",
                    "ts",
                    "amount",
                    "currency",
                    "attributes",
                }
                assert (ev["channel"], ev["currency"], ev["attributes"]) == (
                    "branch",
                    "EUR",
                    {"product": offer},
                )
                converted[group] += 1
        r.react(record, {}, 2000.0)  # seen again: converts once at most
    assert sum(converted.values()) == len(r.converted)
    shown_rate, control_rate = PLANTED[offer]
    for group, rate in (("shown", shown_rate), ("control", control_rate)):
        sd = math.sqrt(rate * (1 - rate) / (n / 2))
        assert abs(converted[group] / (n / 2) - rate) < 4 * sd, (group, converted)
    uplift = (converted["shown"] - converted["control"]) / (n / 2)
    sd = math.sqrt(shown_rate * (1 - shown_rate) / (n / 2) + control_rate * (1 - control_rate) / (n / 2))
    if shown_rate > control_rate:
        assert uplift > 4 * sd  # clearly more often
    else:
        assert abs(uplift) < 4 * sd  # the same base rate


def test_answers_and_conversions_come_out_of_the_traffic() -> None:
    sim = Simulation(Town(100, seed=1), seed=2, id_prefix="x")
    cid = sim.town.customers[7].customer_id
    record = {"decision_id": "d1", "customer_id": cid, "channel": "mobile", "event": {"type": "login"},
              "actions": [{"id": "credit_card_gold", "kind": "offer"}]}  # fmt: skip
    sim.responses.converts = lambda *a: True  # type: ignore[method-assign]
    sim.observe(record, START)
    out = [sim.next_event(START + i * 10.0) for i in range(400)]
    kinds = {
        e["type"] for e in out if e["customer_id"] == cid and e["type"] in ("offer_response", "conversion")
    }
    assert "conversion" in kinds
    sim.observe(
        {**record, "decision_id": "d2", "event": {"type": "offer_response"}}, START
    )  # not decided: no answer
    assert not [x for x in sim._due if isinstance(x[2], dict) and "d2" in x[2]["event_id"]]
