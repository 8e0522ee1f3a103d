"""Rolling customer state as the decision sees it (pure: no I/O here).

The Redis adapter (``engine.store.state``) returns, for each event, the raw reply of the
ingest script; :func:`snapshot_from_reply` turns it into a typed :class:`Snapshot`.

Sliding windows are bucketed: a window of width W kept in n buckets counts events
whose bucket lies within the last n buckets of the newest event seen, so it covers
between W - W/n and W of history. Amounts are summed in integer minor units (cents),
so totals are exact.

>>> WINDOWS[0]
Window(name='10m', bucket_s=60, buckets=10)
>>> to_cents(12.345)
1235
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, NamedTuple

import orjson

from engine.domain.events import Event


class Window(NamedTuple):
    name: str
    bucket_s: int
    buckets: int

    @property
    def seconds(self) -> int:
        return self.bucket_s * self.buckets


WINDOWS: tuple[Window, ...] = (
    Window("10m", 60, 10),
    Window("1h", 300, 12),
    Window("24h", 3600, 24),
    Window("7d", 21600, 28),
    Window("30d", 86400, 30),
)
CONTACT_WINDOW_S = 7 * 86400
# Event types whose last occurrence is kept per customer (``secs_since_<type>``), plus
# ``new_device``, the last time a device was seen beside known ones.
MARKED = ("login", "password_reset", "device_change", "pin_change", "complaint", "transfer",
          "withdrawal", "offer_response", "new_device")  # fmt: skip
_CENT = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class Tally:
    count: int
    cents: int

    @property
    def amount(self) -> float:
        return self.cents / 100.0


ZERO = Tally(0, 0)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the decision needs to know about one customer at one event."""

    windows: dict[str, dict[str, Tally]]  # window name -> dimension -> tally
    last: dict[str, str] = field(default_factory=dict)  # last seen, before this event
    device_known: bool | None = None
    devices: int = 0
    pin_failures_1h: int = 0
    contacts: tuple[tuple[str, float], ...] = ()  # (decision|action|channel, ts), last 7 d
    open_alerts: int = 0
    profile: dict[str, Any] = field(default_factory=dict)
    seen: dict[str, float] = field(default_factory=dict)  # marked type -> last ts, before this event
    device_customers_24h: int = 0  # customers seen on this event's device in 24 h
    duplicate: bool = False
    stored_decision: bytes | None = None  # set when a repeat's decision was stored

    def tally(self, window: str, dim: str = "all") -> Tally:
        return self.windows.get(window, {}).get(dim, ZERO)


def to_cents(amount: float) -> int:
    # Through the shortest decimal repr, so 12.345 is 1235 cents, not 1234.
    return int(Decimal(repr(amount)).quantize(_CENT, rounding=ROUND_HALF_UP) * 100)


def lua_payload(event: Event) -> bytes:
    """The compact form of an event the ingest script reads."""
    out: dict[str, Any] = {"id": event.event_id, "ch": event.channel, "ty": event.type}
    out["ts"] = event.ts
    if event.amount is not None:
        out["amt"] = to_cents(event.amount)
    if event.device_id:
        out["dev"] = event.device_id
    if event.terminal_id:
        out["term"] = event.terminal_id
    if event.geo is not None:
        out["lat"], out["lon"] = event.geo.lat, event.geo.lon
    if event.type == "offer_response":
        action, response = event.attributes.get("action_id"), event.attributes.get("response")
        if isinstance(action, str) and isinstance(response, str):
            out["act"], out["resp"] = action, response
    out["cid"] = event.customer_id
    out["summary"] = orjson.dumps(event_summary(event)).decode()
    return orjson.dumps(out)


def event_summary(event: Event) -> dict[str, Any]:
    """What the customer's recent-interactions list keeps of an event."""
    summary: dict[str, Any] = {
        "event_id": event.event_id,
        "ts": event.ts,
        "channel": event.channel,
        "type": event.type,
    }
    for name in ("amount", "device_id", "terminal_id"):
        value = getattr(event, name)
        if value is not None:
            summary[name] = value
    return summary


def snapshot_from_reply(reply: dict[str, Any], channel: str, etype: str) -> Snapshot:
    """Turn one element of the ingest script's reply into a :class:`Snapshot`."""
    duplicate = bool(reply.get("dup"))
    stored_decision: bytes | None = None
    facts: dict[str, Any] = reply.get("facts") or {}
    if duplicate:
        stored = orjson.loads(reply["stored"])
        if stored.get("pending"):
            facts = stored.get("facts") or {}  # first delivery never finished: redo
        else:
            stored_decision = reply["stored"].encode()
    profile_raw = reply.get("profile")
    contacts = reply.get("contact") or []
    return Snapshot(
        windows=_window_summary(reply.get("windows") or [], channel, etype),
        last=_as_map(facts.get("last")),
        device_known=facts.get("device_known"),
        devices=int(facts.get("devices") or 0),
        pin_failures_1h=int(reply.get("pin_recent") or 0),
        contacts=tuple((str(contacts[i]), float(contacts[i + 1])) for i in range(0, len(contacts), 2)),
        open_alerts=int(reply.get("open_alerts") or 0),
        profile=orjson.loads(profile_raw) if profile_raw else {},
        seen={str(k): float(v) for k, v in _as_map(facts.get("seen")).items()},
        device_customers_24h=int(reply.get("dev_customers") or 0),
        duplicate=duplicate,
        stored_decision=stored_decision,
    )


def _as_map(value: Any) -> dict[str, str]:
    # cjson encodes an empty Lua table as {} but an empty HGETALL as []
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def window_tallies(pairs: Iterable[tuple[str, str]]) -> dict[str, dict[str, Tally]]:
    """Parse the totals hash (``<window>|<dim>|c|a`` fields) into tallies per window.

    The total over all events, ``all``, is the sum over channels: every event has
    exactly one channel, so the script need not store it.

    >>> w = window_tallies([("1h|ch:atm|c", "2"), ("1h|ch:atm|a", "500"), ("1h|ch:mobile|c", "1"),
    ...                     ("1h|_hi", "9"), ("1h|ty:login|c", "1")])
    >>> w["1h"]["all"], w["1h"]["ty:login"]
    (Tally(count=3, cents=500), Tally(count=1, cents=0))
    """
    raw: dict[str, dict[str, list[int]]] = {}
    for key, value in pairs:
        window, _, rest = key.partition("|")
        dim, _, kind = rest.rpartition("|")
        if not dim:
            continue  # window metadata (_hi, _lo)
        slot = raw.setdefault(window, {}).setdefault(dim, [0, 0])
        slot[0 if kind == "c" else 1] = int(value)
    out: dict[str, dict[str, Tally]] = {}
    for window, dims in raw.items():
        tallies = {dim: Tally(c, a) for dim, (c, a) in dims.items() if c or a}
        channels = [t for dim, t in tallies.items() if dim.startswith("ch:")]
        if channels:
            tallies["all"] = Tally(sum(t.count for t in channels), sum(t.cents for t in channels))
        out[window] = tallies
    return out


def _window_summary(summary: list[Any], channel: str, etype: str) -> dict[str, dict[str, Tally]]:
    """The script's per-window numbers (see ``window_summary`` in ingest.lua) as tallies."""
    if not summary:
        return {}
    out: dict[str, dict[str, Tally]] = {}
    for w, (all_c, all_a, ch_c, ch_a, ty_c, ty_a) in zip(WINDOWS, summary, strict=False):
        out[w.name] = {
            "all": Tally(int(all_c), int(all_a)),
            "ch:" + channel: Tally(int(ch_c), int(ch_a)),
            "ty:" + etype: Tally(int(ty_c), int(ty_a)),
        }
    complaints = int(summary[len(WINDOWS)])
    if complaints and etype != "complaint":
        out["7d"]["ty:complaint"] = Tally(complaints, 0)
    return out
