"""Feature building: (event, state snapshot) -> a flat dict of numbers and strings.

Pure and cheap: it runs once per event and its output is shared by the rules, the
models and the audit record.

>>> from engine.domain.events import Event
>>> from engine.domain.state import Snapshot, Tally
>>> ev = Event("e1", "c1", "atm", "withdrawal", ts=1795428000.0, amount=500.0)
>>> snap = Snapshot(windows={"30d": {"ty:withdrawal": Tally(5, 90000)}})
>>> f = build_features(ev, snap)
>>> f["amount_ratio_30d"], f["hour"], f["type"]
(5.0, 10, 'withdrawal')
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from engine.domain.events import Event
from engine.domain.state import MARKED, WINDOWS, Snapshot

_EARTH_KM = 6371.0088
_MIN_HISTORY = 3  # prior events of a type before an amount ratio means anything


def build_features(event: Event, snap: Snapshot, profile_fields: tuple[str, ...] = ()) -> dict[str, Any]:
    """``profile_fields``: the profile fields the models read (models/featureconfig.py),
    copied as ``profile.<name>`` so the audit record keeps what the models saw."""
    when = datetime.fromtimestamp(event.ts, UTC)
    f: dict[str, Any] = {
        "channel": event.channel,
        "type": event.type,
        "amount": event.amount or 0.0,
        "log_amount": math.log1p(event.amount or 0.0),
        "hour": when.hour,
        "weekday": when.weekday(),
        "night": int(when.hour < 6),
    }
    for w in WINDOWS:
        total = snap.tally(w.name)
        f[f"n_{w.name}"] = total.count
        f[f"amt_{w.name}"] = total.amount
        f[f"n_{w.name}_channel"] = snap.tally(w.name, "ch:" + event.channel).count
        by_type = snap.tally(w.name, "ty:" + event.type)
        f[f"n_{w.name}_type"] = by_type.count
        f[f"amt_{w.name}_type"] = by_type.amount
    f["amount_ratio_30d"] = _amount_ratio(event, snap)
    f.update(_device_features(event, snap))
    f.update(_movement_features(event, snap))
    f["pin_failures_1h"] = snap.pin_failures_1h
    f["open_alerts"] = snap.open_alerts
    f["contacts_7d"] = len(snap.contacts)
    f["complaints_7d"] = snap.tally("7d", "ty:complaint").count
    f["device_customers_24h"] = snap.device_customers_24h
    for marked in MARKED:
        at = snap.seen.get(marked)
        f[f"secs_since_{marked}"] = round(max(event.ts - at, 0.0), 3) if at is not None else -1.0
    f.update(_profile_features(snap.profile))
    f["home_distance_km"] = _home_distance(event, snap.profile)
    for name in profile_fields:
        value = snap.profile.get(name)
        # Scalars only: a list or object in the profile is not a model input.
        f["profile." + name] = value if isinstance(value, str | int | float) else None
    return f


def _amount_ratio(event: Event, snap: Snapshot) -> float:
    """This amount over the customer's average for the type in 30 days before it."""
    if not event.amount:
        return 0.0
    tally = snap.tally("30d", "ty:" + event.type)
    prior_n = tally.count - 1  # the tally already includes this event
    prior_sum = tally.amount - event.amount
    if prior_n < _MIN_HISTORY or prior_sum <= 0:
        return 0.0
    return round(event.amount / (prior_sum / prior_n), 4)


def _device_features(event: Event, snap: Snapshot) -> dict[str, Any]:
    known = snap.device_known
    return {
        # A first-ever device is not suspicious; a new one beside known ones may be.
        "new_device": int(event.device_id is not None and known is False and snap.devices > 0),
        "known_devices": snap.devices,
    }


def _movement_features(event: Event, snap: Snapshot) -> dict[str, Any]:
    last = snap.last
    out: dict[str, Any] = {
        "seconds_since_last": -1.0,
        "channel_switch": 0,
        "terminal_changed": 0,
        "distance_km": -1.0,
        "speed_kmh": -1.0,
    }
    if not last.get("ts"):
        return out
    gap = max(event.ts - float(last["ts"]), 0.0)
    out["seconds_since_last"] = round(gap, 3)
    out["channel_switch"] = int(last.get("ch") != event.channel)
    out["terminal_changed"] = int(
        bool(event.terminal_id and last.get("term") and last["term"] != event.terminal_id)
    )
    if event.geo is not None and "lat" in last:
        km = haversine_km(float(last["lat"]), float(last["lon"]), event.geo.lat, event.geo.lon)
        out["distance_km"] = round(km, 3)
        # Floor the gap at a minute so two events in one second are not "infinitely fast".
        out["speed_kmh"] = round(km / (max(gap, 60.0) / 3600.0), 1)
    return out


def _home_distance(event: Event, profile: dict[str, Any]) -> float:
    home = profile.get("home_geo")
    if event.geo is None or not isinstance(home, dict):
        return -1.0
    try:
        lat, lon = float(home["lat"]), float(home["lon"])
    except (KeyError, TypeError, ValueError):
        return -1.0  # a malformed profile must not break the decision
    return round(haversine_km(lat, lon, event.geo.lat, event.geo.lon), 3)


def _profile_features(profile: dict[str, Any]) -> dict[str, Any]:
    products = profile.get("products") or []
    return {
        "segment": str(profile.get("segment") or "unknown"),
        "age_band": str(profile.get("age_band") or "unknown"),
        "income_band": str(profile.get("income_band") or "unknown"),
        "kyc_risk": str(profile.get("kyc_risk") or "unknown"),
        "products": tuple(sorted(str(p) for p in products)) if isinstance(products, list) else (),
        "has_profile": int(bool(profile)),
    }


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance between two points, in kilometres.

    >>> round(haversine_km(51.5074, -0.1278, 48.8566, 2.3522))
    344
    """
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * _EARTH_KM * math.asin(math.sqrt(a))


def _feature_names() -> frozenset[str]:
    sample = Event("x", "x", "atm", "login", 0.0, amount=1.0, device_id="d", terminal_id="t")
    return frozenset(build_features(sample, Snapshot(windows={})))


FEATURE_NAMES = _feature_names()  # what rules may read as state.<name>
