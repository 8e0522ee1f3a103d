"""The unified view of a customer (``GET /v1/customers/{id}``, the alert page) from the
customer's keys as Redis returns them: every number a number, every time in epoch
seconds (a float, UTC), as the README's API table documents."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from engine.domain.profile import shown
from engine.domain.state import WINDOWS
from engine.store.codec import window_tallies
from engine.store.redisio import text

# Fields of the customer's ``last`` hash (ingest.lua update_last) that hold numbers: Lua
# writes them as strings with 17 significant digits ("55.972299999999997").
_LAST_NUMBERS = frozenset({"ts", "lat", "lon"})


def last_seen(last: Mapping[Any, Any]) -> dict[str, Any]:
    """The newest event's fields, numbers as numbers.

    >>> last_seen({b"ts": b"1796300783.7089393", b"ch": b"atm", b"lat": b"55.972299999999997"})
    {'ts': 1796300783.7089393, 'ch': 'atm', 'lat': 55.9723}
    """
    out: dict[str, Any] = {}
    for raw_name, raw_value in last.items():
        name, value = text(raw_name), text(raw_value)
        out[name] = float(value) if name in _LAST_NUMBERS else value
    return out


def customer_view(customer_id: str, replies: Sequence[Any]) -> dict[str, Any]:
    """The unified view from the customer's keys, read in this order: profile, last,
    devices (with scores), recent events, recent decisions, open alerts, PIN failures
    (a count) and the window totals."""
    profile, last, devices, recent, decisions, alerts, pins, totals = replies
    windows = window_tallies((text(a), text(b)) for a, b in totals.items())
    return {
        "customer_id": customer_id,
        "profile": shown(orjson.loads(profile))
        if profile
        else None,  # deep ones stored before the limit: cut
        "last_seen": last_seen(last),
        "devices": [{"device_id": text(d), "last_seen": ts} for d, ts in devices],
        "recent_pin_failures": pins,
        "windows": {
            w.name: {
                dim: {"count": t.count, "amount": t.amount} for dim, t in windows.get(w.name, {}).items()
            }
            for w in WINDOWS
        },
        "recent_interactions": [orjson.loads(x) for x in recent],
        "recent_decisions": [orjson.loads(x) for x in decisions],
        "open_alerts": sorted((orjson.loads(a) for a in alerts), key=lambda a: a["alert_id"]),
    }
