"""Parsing the ingest script's reply (engine/store/codec.py), and features built from it."""

from __future__ import annotations

import orjson

from engine.domain.events import Event, Geo
from engine.domain.features import build_features
from engine.domain.state import Snapshot, Tally, to_cents
from engine.store.codec import ingest_payload, snapshot_from_reply

TS = 1_795_428_000.0


def test_reply_of_a_first_delivery() -> None:
    reply = {
        "facts": {"last": {"ts": str(TS - 60), "ch": "mobile", "lat": "51.5", "lon": "-0.1"},
                  "device_known": False, "devices": 2},
        # per window: all c/a, this channel c/a, this type c/a; then complaints in 7 d
        "windows": [[3, 12050, 1, 0, 1, 0], [3, 12050, 1, 0, 1, 0], [3, 12050, 1, 0, 1, 0],
                    [4, 12050, 2, 0, 2, 0], [9, 99999, 5, 700, 4, 700], 1],
        "profile": orjson.dumps({"segment": "mass"}).decode(),
        "contact": ["d1|savings_boost|atm", str(TS - 100)],
        "open_alerts": 1,
        "pin_recent": 2,
    }  # fmt: skip
    snap = snapshot_from_reply(reply, "atm", "withdrawal")
    assert snap.tally("10m") == Tally(3, 12050)
    assert snap.tally("10m", "ch:atm") == Tally(1, 0) and snap.tally("30d", "ty:withdrawal") == Tally(4, 700)
    assert snap.tally("7d", "ty:complaint") == Tally(1, 0) and snap.tally("7d", "ch:mobile") == Tally(0, 0)
    assert snap.device_known is False and snap.devices == 2
    assert snap.contacts == (("d1|savings_boost|atm", TS - 100),)
    assert snap.profile == {"segment": "mass"} and not snap.duplicate


def test_reply_of_a_repeat_returns_the_stored_decision() -> None:
    stored = orjson.dumps({"decision_id": "x"}).decode()
    snap = snapshot_from_reply({"dup": 1, "stored": stored, "windows": {}, "contact": []}, "atm", "login")
    assert snap.duplicate and snap.stored_decision == stored.encode()


def test_repeat_of_an_unfinished_delivery_recovers_prior_facts() -> None:
    pending = orjson.dumps({"pending": 1, "facts": {"last": [], "devices": 1, "device_known": True}})
    reply = {"dup": 1, "stored": pending.decode(), "windows": {}, "contact": []}
    snap = snapshot_from_reply(reply, "atm", "login")
    assert snap.duplicate and snap.stored_decision is None and snap.devices == 1 and snap.last == {}


def test_cents_are_exact() -> None:
    assert [to_cents(x) for x in (0.1, 0.2, 12.345, 99.995, 1e9)] == [10, 20, 1235, 10000, 100000000000]


def test_payload_is_compact_and_carries_amount_in_cents() -> None:
    ev = Event("e", "c", "atm", "withdrawal", TS, amount=12.34, terminal_id="T", geo=Geo(1.0, 2.0))
    payload = orjson.loads(ingest_payload(ev))
    assert payload["amt"] == 1234 and payload["term"] == "T" and payload["lat"] == 1.0


def test_movement_and_device_features() -> None:
    ev = Event("e", "c", "atm", "withdrawal", TS, amount=100.0, device_id="new", geo=Geo(40.7128, -74.006))
    snap = Snapshot(
        windows={"10m": {"ty:withdrawal": Tally(2, 20000)}},
        last={"ts": str(TS - 3600), "ch": "mobile", "lat": "51.5074", "lon": "-0.1278"},
        device_known=False,
        devices=1,
    )
    f = build_features(ev, snap)
    assert f["new_device"] == 1 and f["channel_switch"] == 1
    assert 5500 < f["distance_km"] < 5600 and f["speed_kmh"] > 5000
    assert f["n_10m_type"] == 2 and f["seconds_since_last"] == 3600


def test_first_device_is_not_new_and_no_history_means_no_movement() -> None:
    ev = Event("e", "c", "mobile", "login", TS, device_id="d1")
    f = build_features(ev, Snapshot(windows={}, device_known=False, devices=0))
    assert f["new_device"] == 0 and f["distance_km"] == -1.0 and f["amount_ratio_30d"] == 0.0


def test_distance_from_home_uses_the_profile() -> None:
    ev = Event("e", "c", "atm", "withdrawal", TS, geo=Geo(48.8566, 2.3522))
    far = build_features(ev, Snapshot(windows={}, profile={"home_geo": {"lat": 51.5074, "lon": -0.1278}}))
    assert round(far["home_distance_km"]) == 344
    broken = build_features(ev, Snapshot(windows={}, profile={"home_geo": {"lat": "north"}}))
    assert broken["home_distance_km"] == -1.0


def test_the_payload_digest_goes_to_the_script_and_a_conflict_comes_back() -> None:
    from engine.domain.events import payload_digest

    ev = Event("e", "c", "atm", "withdrawal", TS, amount=12.34)
    assert orjson.loads(ingest_payload(ev))["h"] == payload_digest(ev)
    snap = snapshot_from_reply({"conflict": 1}, "atm", "withdrawal")
    assert snap.conflict and snap.duplicate and snap.stored_decision is None
    plain = snapshot_from_reply({"dup": 1, "stored": '{"decision_id":"x"}', "windows": {}}, "atm", "login")
    assert not plain.conflict
