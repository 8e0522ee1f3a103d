"""The outbox: the records each commit wrote, read back for the relay to deliver.

The commit script (engine/store/lua/commit.lua) appends one entry per decision to the
stream ``P:outbox`` in the same atomic step as the state: its audit record, the alerts
it raised, the label its event carries. The relay (agents/relay.py) reads the entries as
one consumer of the group ``relay`` (one consumer per worker), hands the records to
Kafka and deletes an entry once all its records are delivered. An entry a relay read and
did not delete (its worker died, or the broker refused it) is claimed again after
``claim_idle_s`` by whichever relay looks first: delivery is at least once, and the
consumers downstream dedupe (the desk by alert id, the trainer by decision id and label).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from engine.settings import Settings
from engine.store import keys
from engine.store.redisio import guarded, redis_errors

GROUP = "relay"


@dataclass(frozen=True, slots=True)
class Entry:
    """One decision's outgoing records: topic name (unprefixed) -> values, keyed by customer."""

    id: bytes
    customer: bytes
    records: tuple[tuple[str, bytes], ...]


def entry_of(entry_id: bytes, fields: dict[bytes, bytes]) -> Entry:
    """An outbox entry as the relay sends it: ``a`` the audit record, ``al1``, ``al2``... the
    alert records, ``f`` a label.

    >>> e = entry_of(b"1-0", {b"c": b"C1", b"a": b"{}", b"al1": b'{"x":1}', b"al2": b'{"y":2}', b"f": b"{}"})
    >>> [topic for topic, _ in e.records], e.customer
    (['decisions.audit', 'risk.alerts', 'risk.alerts', 'feedback'], b'C1')
    """
    records: list[tuple[str, bytes]] = [("decisions.audit", fields[b"a"])]
    records += [("risk.alerts", value) for name, value in fields.items() if name.startswith(b"al")]
    if b"f" in fields:
        records.append(("feedback", fields[b"f"]))
    return Entry(entry_id, fields.get(b"c", b""), tuple(records))


class Outbox:
    def __init__(self, client: aioredis.Redis, settings: Settings, consumer: str | None = None) -> None:
        self._redis = client
        self.key = keys.outbox(settings.key_prefix)
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self._claim_idle_ms = int(settings.outbox_claim_idle_s * 1000)
        self._cursor = b"0-0"

    async def ensure_group(self) -> None:
        """Create the relay group reading from the stream's start (idempotent)."""
        with redis_errors("outbox group"):
            try:
                await self._redis.xgroup_create(self.key, GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def forget_idle_consumers(self, idle_ms: int) -> int:
        """Drop consumers (workers gone) with nothing pending, idle ``idle_ms``: each
        worker start adds one, and the group would otherwise keep them all."""
        with redis_errors("outbox consumers"):
            consumers = await self._redis.xinfo_consumers(self.key, GROUP)
            me = self.consumer.encode()
            gone = [
                c["name"] for c in consumers
                if int(c["pending"]) == 0 and int(c["idle"]) >= idle_ms and c["name"] != me
            ]  # fmt: skip
            for name in gone:
                await self._redis.xgroup_delconsumer(self.key, GROUP, name)
        return len(gone)

    async def read(self, count: int, block_ms: int | None) -> list[Entry]:
        """Entries no relay has read yet, waiting up to ``block_ms`` for the first (None:
        not at all; 0 would wait for ever)."""
        reply: Any = await guarded(
            "outbox read",
            self._redis.xreadgroup(GROUP, self.consumer, {self.key: ">"}, count=count, block=block_ms),
        )
        return _entries(reply[0][1] if reply else [])

    async def claim(self, count: int) -> list[Entry]:
        """Entries read but not deleted for ``claim_idle_s`` (a relay died, or the broker
        refused them), now this consumer's; walks the pending list a page per call."""
        reply = await guarded(
            "outbox claim",
            self._redis.xautoclaim(
                self.key, GROUP, self.consumer, self._claim_idle_ms, start_id=self._cursor, count=count
            ),
        )
        self._cursor = reply[0]
        return _entries(reply[1])

    async def done(self, ids: Sequence[bytes]) -> None:
        """Delivered: acknowledge and delete, so the stream holds only what is pending."""
        if not ids:
            return
        with redis_errors("outbox delete"):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.xack(self.key, GROUP, *ids)
                pipe.xdel(self.key, *ids)
                await pipe.execute()

    async def backlog(self) -> int:
        """Entries not delivered yet (read or not)."""
        return int(await guarded("outbox length", self._redis.xlen(self.key)))


def _entries(raw: Sequence[Any]) -> list[Entry]:
    # XAUTOCLAIM lists entries deleted meanwhile as (id, None): nothing left to send.
    return [entry_of(entry_id, fields) for entry_id, fields in raw if fields]
