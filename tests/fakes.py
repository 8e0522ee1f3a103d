"""In-memory stores for unit tests: one shared set, typed against the Protocols of
``engine/store/base.py`` (each subclasses its Protocol explicitly, so mypy checks every
signature and refuses a fake that misses a method). No I/O, no servers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Generic, TypeVar

import orjson

from engine.decide.outbound import Contacts
from engine.domain.decision import Decision
from engine.domain.events import Event, payload_digest
from engine.domain.state import Snapshot
from engine.errors import StoreError
from engine.rules.ruleset import Offer
from engine.store import codec
from engine.store.base import CustomerState, RuleSource, SnapshotSource
from tests.rulebundles import version_of

T = TypeVar("T")


class FakeAnnouncements(Generic[T]):
    """A subscription: ``wait`` returns what the fake store announced, or ``quiet`` after
    ``timeout`` seconds without an announcement."""

    def __init__(self, quiet: T) -> None:
        self._quiet = quiet
        self.queue: asyncio.Queue[T] = asyncio.Queue()

    async def wait(self, timeout: float) -> T:
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return self._quiet


class FakeState(CustomerState):
    """Customer state as the decision service sees it: a repeat of an event gets the body
    committed for it; the commit shows the first candidates (no caps, no suppression) and
    builds the body from the commit script's wire form, as the script does.

    ``fail``: every call raises StoreError (Redis down); ``stall``: ingest waits until it is
    set (a hung Redis); ``entered`` is set once a batch has reached the store."""

    def __init__(self, fail: bool = False, stall: asyncio.Event | None = None) -> None:
        self.fail = fail
        self.stall = stall
        self.entered = asyncio.Event()
        self.ingested: list[str] = []  # event ids, in order
        self.answers: dict[tuple[str, str], bytes | None] = {}  # None: ingested, not committed
        self.digests: dict[tuple[str, str], str] = {}  # the payload each event id was bound to
        self.profiles: dict[str, dict[str, Any]] = {}

    def _check(self) -> None:
        if self.fail:
            raise StoreError("redis down")

    async def ingest(self, events: Sequence[Event]) -> list[Snapshot]:
        self.entered.set()
        self._check()
        if self.stall is not None:
            await self.stall.wait()
        snapshots = []
        for e in events:
            self.ingested.append(e.event_id)
            key = (e.channel, e.event_id)
            repeat = key in self.answers
            digest = payload_digest(e)
            if self.digests.setdefault(key, digest) != digest:  # as ingest.lua: nothing changes
                snapshots.append(Snapshot(windows={}, duplicate=True, conflict=True))
                continue
            snapshots.append(
                Snapshot(
                    windows={},
                    profile=dict(self.profiles.get(e.customer_id, {})),
                    duplicate=repeat,
                    stored_decision=self.answers.get(key),
                )
            )
            self.answers.setdefault(key, None)
        return snapshots

    async def commit(
        self, decisions: Sequence[Decision], offers: Mapping[str, Offer], timings_ms: dict[str, float]
    ) -> list[tuple[Decision | None, bytes]]:
        self._check()
        committed: list[tuple[Decision | None, bytes]] = []
        for decision in decisions:
            p = orjson.loads(codec.commit_payload(decision, offers, timings_ms))
            picked = list(range(min(p["max"], len(p["cands"]))))
            actions = ",".join(p["cands"][i]["frag"] for i in picked) or p["fallback"]["frag"]
            alerts = ",".join(a["frag"] for a in p["alerts"])
            body = f"{p['head']}[{actions}]{p['mid']}[{alerts}]{p['tail']}"
            reply = {"body": body, "picked": picked, "capped": [], "alerts": list(range(len(p["alerts"])))}
            final, stored = codec.apply_commit(decision, reply)
            self.answers[(decision.event.channel, decision.event.event_id)] = stored
            committed.append((final, stored))
        return committed

    async def customer_view(self, customer_id: str) -> dict[str, Any]:
        self._check()
        profile = self.profiles.get(customer_id)
        raw = None if profile is None else orjson.dumps(profile)
        return codec.customer_view(customer_id, [raw, {}, [], [], [], [], 0, {}])

    async def peek(
        self, customer_id: str, now: float, offer_ids: Sequence[str]
    ) -> tuple[Snapshot, Contacts] | None:
        self._check()
        if customer_id not in self.profiles:
            return None
        return Snapshot(windows={}, profile=dict(self.profiles[customer_id])), Contacts()

    async def put_profile(self, customer_id: str, profile: dict[str, Any], ttl_s: int) -> None:
        self._check()
        self.profiles[customer_id] = dict(profile)

    async def ping(self) -> None:
        self._check()


class FakeRuleStore(RuleSource):
    """Rule versions in a dict; ``put`` publishes one (and announces it)."""

    def __init__(self) -> None:
        self.versions: dict[str, dict[str, str]] = {}
        self.pointer: str | None = None
        self.reads = 0  # calls of current(): fetches of a whole bundle
        self.subscribers: list[FakeAnnouncements[bool]] = []

    def put(self, files: dict[str, str]) -> str:
        version = version_of(len(self.versions) + 1, files)
        self.versions[version], self.pointer = dict(files), version
        for sub in self.subscribers:
            sub.queue.put_nowait(True)
        return version

    async def current_version(self) -> str | None:
        return self.pointer

    async def current(self) -> tuple[str, dict[str, str]] | None:
        self.reads += 1
        return None if self.pointer is None else (self.pointer, self.versions[self.pointer])

    async def current_signed(self) -> tuple[str, dict[str, str], str | None] | None:
        current = await self.current()
        return None if current is None else (*current, None)  # unsigned: no keys in unit tests

    async def seed_if_empty(
        self, files: Mapping[str, str], author: str = "beacon worker", note: str = ""
    ) -> str | None:
        return None if self.pointer else self.put(dict(files))

    @contextlib.asynccontextmanager
    async def notifications(self) -> AsyncIterator[FakeAnnouncements[bool]]:
        sub = FakeAnnouncements(False)
        self.subscribers.append(sub)
        try:
            yield sub
        finally:
            self.subscribers.remove(sub)


class FakeSnapshotStore(SnapshotSource):
    """Model snapshots in a dict: per version a model, or an exception ``latest`` raises
    (a refused snapshot). ``fail``: every pointer read raises it (Redis down, no key)."""

    def __init__(self) -> None:
        self.pointer: dict[str, str] = {}
        self.snapshots: dict[str, object] = {}
        self.fetches = 0  # calls of latest(): fetches of a whole snapshot
        self.fail: Exception | None = None
        self.subscribers: list[FakeAnnouncements[str | None]] = []

    def put(self, name: str, number: int, model: object) -> str:
        version = f"{name}-v{number}-{number:012x}"
        self.snapshots[version], self.pointer[name] = model, version
        for sub in self.subscribers:
            sub.queue.put_nowait(version)
        return version

    async def current_version(self, name: str) -> str | None:
        if self.fail:
            raise self.fail
        return self.pointer.get(name)

    async def latest(
        self, name: str, running: str | None = None
    ) -> tuple[str, object, dict[str, Any]] | None:
        self.fetches += 1
        version = self.pointer.get(name)
        if version is None:
            return None
        model = self.snapshots[version]
        if isinstance(model, Exception):
            raise model
        return version, model, {}

    @contextlib.asynccontextmanager
    async def notifications(self) -> AsyncIterator[FakeAnnouncements[str | None]]:
        sub: FakeAnnouncements[str | None] = FakeAnnouncements(None)
        self.subscribers.append(sub)
        try:
            yield sub
        finally:
            self.subscribers.remove(sub)
