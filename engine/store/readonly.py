"""A customer's state read without changing it (outbound scoring): the reads, and their
decoding into the :class:`~engine.domain.state.Snapshot` and
:class:`~engine.decide.outbound.Contacts` the pure scoring takes. The adapter
(``engine.store.state.StateStore.peek``) sends the reads queued here in one pipeline.

The ingest script computes window tallies as it adds an event, expiring old buckets
first. Nothing is added here, so nothing is expired in Redis either: the tallies are
summed from the buckets still inside each window at ``now``, which is what the next
event would see (less itself).

>>> w = window_tallies_at({"1h": {"5983093|ch:atm|c": "2", "5983093|ch:atm|a": "500", "1|ch:atm|c": "9"}},
...                       1794928000.0)
>>> w["1h"]["all"], w["1h"]["ch:atm"], w["10m"]
(Tally(count=2, cents=500), Tally(count=2, cents=500), {})
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from engine.decide.outbound import Contacts
from engine.domain.state import CONTACT_WINDOW_S, MARKED, WINDOWS, Snapshot, Tally
from engine.store import keys
from engine.store.layout import KeyLayout
from engine.store.redisio import text

__all__ = ["Contacts", "decode", "queue_reads", "window_tallies_at"]

# What peek reads, in order (each a read command: no write, no TTL touched).
READS = ("profile", "last", "devices", "seen", "pins", "contact", "alerts", "declined", "daily",
         *(f"wb:{w.name}" for w in WINDOWS))  # fmt: skip


def queue_reads(pipe: Any, layout: KeyLayout, customer_id: str, now: float, offer_ids: Sequence[str]) -> None:
    """Queue :data:`READS` on a pipeline: read commands only (no write, no TTL touched)."""
    k = layout.customer(customer_id)
    pipe.get(k + keys.PROFILE)
    pipe.hgetall(k + keys.LAST)
    pipe.zcard(k + keys.DEVICES)
    pipe.hmget(k + keys.SEEN, list(MARKED))
    pipe.zcount(k + keys.PINS, now - 3600, "+inf")
    pipe.zrangebyscore(k + keys.CONTACT, now - CONTACT_WINDOW_S, "+inf", withscores=True)
    pipe.hlen(k + keys.ALERTS)
    pipe.hgetall(k + keys.DECLINED)
    # The global daily-cap hash of the day, named as the commit script names it.
    daily = layout.caps(datetime.fromtimestamp(now, UTC).strftime("%Y%m%d"))
    if offer_ids:
        pipe.hmget(daily, list(offer_ids))
    else:
        pipe.exists(daily)  # a stand-in, so the replies keep their order
    for w in WINDOWS:
        pipe.hgetall(k + keys.WINDOW_BUCKETS + w.name)


def window_tallies_at(buckets: Mapping[str, Mapping[Any, Any]], now: float) -> dict[str, dict[str, Tally]]:
    """Tallies per window from its bucket hashes (``<bucket>|<dim>|c|a`` fields), counting
    the buckets within the window at ``now``; ``all`` is the sum over channels."""
    out: dict[str, dict[str, Tally]] = {}
    for w in WINDOWS:
        cutoff = math.floor(now / w.bucket_s) - w.buckets + 1
        sums: dict[str, list[int]] = {}
        for raw_key, raw_value in (buckets.get(w.name) or {}).items():
            bucket, _, rest = text(raw_key).partition("|")
            dim, _, kind = rest.rpartition("|")
            if not dim or int(bucket) < cutoff:
                continue
            slot = sums.setdefault(dim, [0, 0])
            slot[0 if kind == "c" else 1] += int(text(raw_value))
        tallies = {dim: Tally(c, a) for dim, (c, a) in sums.items()}
        channels = [t for dim, t in tallies.items() if dim.startswith("ch:")]
        if channels:
            tallies["all"] = Tally(sum(t.count for t in channels), sum(t.cents for t in channels))
        out[w.name] = tallies
    return out


def decode(replies: Sequence[Any], offer_ids: Sequence[str], now: float) -> tuple[Snapshot, Contacts] | None:
    """The snapshot and contact state from the replies to :data:`READS`; None when the
    customer has neither a profile nor any state (unknown)."""
    got = dict(zip(READS, replies, strict=True))
    last = {text(k): text(v) for k, v in (got["last"] or {}).items()}
    if not got["profile"] and not last:
        return None
    seen = {ty: float(text(v)) for ty, v in zip(MARKED, got["seen"] or (), strict=False) if v is not None}
    flat = got["contact"] or []
    shown = tuple((text(member), float(ts)) for member, ts in flat)
    snap = Snapshot(
        windows=window_tallies_at({w.name: got[f"wb:{w.name}"] for w in WINDOWS}, now),
        last=last,
        devices=int(got["devices"] or 0),
        pin_failures_1h=int(got["pins"] or 0),
        contacts=shown,
        open_alerts=int(got["alerts"] or 0),
        profile=orjson.loads(got["profile"]) if got["profile"] else {},
        seen=seen,
    )
    declined = {text(k): float(text(v)) for k, v in (got["declined"] or {}).items()}
    daily_raw = got["daily"] if isinstance(got["daily"], list) else []
    daily = {oid: int(text(v)) for oid, v in zip(offer_ids, daily_raw, strict=False) if v is not None}
    return snap, Contacts(shown, declined, daily)
