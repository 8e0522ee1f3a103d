"""The customer-state scripts on a Redis Cluster: a batch split by slot group.

The same scripts as on one Redis (engine/store/state.py), called once per slot group of
the batch (engine/store/layout.py) and sent together (engine/store/clusterline.py). The
two things that are not a customer's are handled beside the scripts: each event's
device gets its customers counted by ``device.lua`` in the same round trip as the
ingest calls; and before a commit whose candidates include offers with a daily cap,
``reserve.lua`` takes one impression of the day's count for each (in that count's own
slot, atomically, so the cap holds across workers as on one Redis), the commit shows
only granted ones, and the grants not shown are given back after it. That is one more
round trip, for batches with such candidates only. A worker that dies between the two
leaves its grants taken: the day's count is then too high by them (fewer offers shown
that day), never too low.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisClusterException, RedisError

from engine.domain.decision import Decision
from engine.domain.events import Event
from engine.domain.labels import is_label_event
from engine.domain.state import Snapshot
from engine.rules.ruleset import Offer
from engine.settings import Settings
from engine.store import codec
from engine.store.clusterline import ClusterLine, ScriptCall
from engine.store.layout import KeyLayout
from engine.store.redisio import redis_errors

log = logging.getLogger("beacon.store")


@dataclass(frozen=True)
class Scripts:
    ingest: AsyncScript
    commit: AsyncScript
    ingest_config: bytes


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y%m%d")


def by_group(groups: Sequence[int]) -> dict[int, list[int]]:
    """Indexes of a batch per slot group, in batch order within each group.

    >>> by_group([3, 1, 3, 0])
    {3: [0, 2], 1: [1], 0: [3]}
    """
    out: dict[int, list[int]] = {}
    for i, group in enumerate(groups):
        out.setdefault(group, []).append(i)
    return out


class ClusterSplit:
    """What :class:`engine.store.state.StateStore` does with one script call, per group."""

    def __init__(
        self, client: aioredis.Redis, layout: KeyLayout, settings: Settings, scripts: Scripts
    ) -> None:
        self._layout = layout
        self._redis = client
        self._line = ClusterLine(client)
        self._settings = settings
        self._scripts = scripts
        self._device = client.register_script(
            resources.files("engine.store").joinpath("lua", "device.lua").read_text()
        )
        self._reserve = client.register_script(
            resources.files("engine.store").joinpath("lua", "reserve.lua").read_text()
        )

    async def ingest(self, events: Sequence[Event]) -> list[Snapshot]:
        layout, scripts = self._layout, self._scripts
        groups = by_group([layout.group_of(e.customer_id) for e in events])
        calls: list[ScriptCall] = [
            (
                scripts.ingest,
                [layout.customer(events[i].customer_id, group) for i in members],
                [scripts.ingest_config, *(codec.ingest_payload(events[i]) for i in members)],
            )
            for group, members in groups.items()
        ]
        devices = [i for i, e in enumerate(events) if e.device_id and not is_label_event(e)]
        calls += [
            (
                self._device,
                [layout.device(events[i].device_id or "")],
                [events[i].customer_id, events[i].ts, codec.DEVICE_CUSTOMERS_BOUND],
            )
            for i in devices
        ]
        with redis_errors("state ingest"):
            replies, _ = await self._line.run(calls)
        out: list[dict[str, Any]] = [{} for _ in events]
        for members, raw in zip(groups.values(), replies, strict=False):
            for i, reply in zip(members, orjson.loads(raw), strict=True):
                out[i] = reply
        for i, n in zip(devices, replies[len(groups) :], strict=True):
            out[i]["dev_customers"] = n
        return [codec.snapshot_from_reply(r, e.channel, e.type, e) for r, e in zip(out, events, strict=True)]

    async def commit(
        self, decisions: Sequence[Decision], offers: Mapping[str, Offer], timings_ms: dict[str, float]
    ) -> list[tuple[Decision | None, bytes]]:
        layout, scripts = self._layout, self._scripts
        groups = by_group([layout.group_of(d.event.customer_id) for d in decisions])
        granted = await self._reserve_daily(decisions, offers)
        calls: list[ScriptCall] = [
            (
                scripts.commit,
                [layout.customer(decisions[i].event.customer_id, group) for i in members],
                [
                    codec.commit_config(self._settings, layout.outbox(group), sorted(granted)),
                    *(codec.commit_payload(decisions[i], offers, timings_ms) for i in members),
                ],
            )
            for group, members in groups.items()
        ]
        with redis_errors("decision commit"):
            replies, _ = await self._line.run(calls)
        out: list[tuple[Decision | None, bytes]] = [(None, b"")] * len(decisions)
        shown: set[str] = set()
        for members, raw in zip(groups.values(), replies, strict=True):
            for i, reply in zip(members, orjson.loads(raw), strict=True):
                out[i] = codec.apply_commit(decisions[i], reply)
                actions = decisions[i].actions
                shown.update(f"{decisions[i].decision_id}|{actions[k].id}" for k in reply.get("picked") or ())
        await self._give_back(granted - shown, {d.decision_id: _day(d.event.ts) for d in decisions})
        return out

    async def _reserve_daily(self, decisions: Sequence[Decision], offers: Mapping[str, Offer]) -> set[str]:
        """One impression of the day's count for each candidate with a daily cap, where the
        count is below the cap: ``<decision>|<offer>`` of those granted."""
        days: list[str] = []
        wanted: list[tuple[str, list[Any]]] = []
        for d in decisions:
            for action in d.actions:
                offer = offers.get(action.id)
                if offer is None or offer.contact.daily_cap <= 0:
                    continue
                day = _day(d.event.ts)
                if day not in days:
                    days.append(day)
                wanted.append(
                    (
                        f"{d.decision_id}|{action.id}",
                        [days.index(day) + 1, action.id, offer.contact.daily_cap],
                    )
                )
        if not wanted:
            return set()
        call = (
            self._reserve,
            [self._layout.caps(day) for day in days],
            [orjson.dumps([w[1] for w in wanted])],
        )
        with redis_errors("daily cap reservation"):
            [grants], _ = await self._line.run([call])
        return {member for (member, _), grant in zip(wanted, grants, strict=True) if grant}

    async def _give_back(self, unused: set[str], day_of: Mapping[str, str]) -> None:
        """Grants the commit did not use (capped otherwise, ranked below the top, or a
        commit made before): returned to the day's count. If this fails, the count stays
        too high by them, which shows fewer offers, never more: logged, not raised, since
        the decisions are committed."""
        if not unused:
            return
        back: dict[tuple[str, str], int] = {}
        for member in unused:
            decision_id, _, offer = member.partition("|")
            key = (day_of[decision_id], offer)
            back[key] = back.get(key, 0) + 1
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for (day, offer), n in back.items():
                    pipe.hincrby(self._layout.caps(day), offer, -n)
                await pipe.execute()
        except (RedisError, RedisClusterException) as exc:
            log.warning(
                "daily-cap grants not given back (%s): %d impressions counted too many", exc, len(unused)
            )
