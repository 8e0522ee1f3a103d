"""Rolling customer state as the decision sees it (pure: no I/O here).

The Redis adapter (``engine.store.state``) returns, for each event, a typed
:class:`Snapshot`; the scripts' wire forms live in ``engine.store.codec``.

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

from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, NamedTuple


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
    conflict: bool = False  # a repeat of an event id with another payload: nothing was read or changed

    def tally(self, window: str, dim: str = "all") -> Tally:
        return self.windows.get(window, {}).get(dim, ZERO)


def to_cents(amount: float) -> int:
    # Through the shortest decimal repr, so 12.345 is 1235 cents, not 1234.
    return int(Decimal(repr(amount)).quantize(_CENT, rounding=ROUND_HALF_UP) * 100)
