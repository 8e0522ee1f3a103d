"""Hot swap of model snapshots in a running worker.

At start the worker loads the current snapshot of each model it scores with (warm start)
and hands it to ``install(name, version, model)``. Then it wakes on every publish
announcement and, at the latest, every ``model_poll_s`` (announcements can be lost),
reads each model's current pointer and, when it names a new version, fetches, verifies,
unpickles (in a thread) and installs it. ``install`` runs on the event loop and should
swap one reference, so each decision scores with one whole version, old or new; it may
raise to refuse a model (e.g. one that fails the model checks).

A snapshot that fails verification, does not unpickle or is refused by ``install`` is
refused: the running model stays, the refusal is logged once (no key material) and
``beacon_model_snapshot_refused_total{model}`` counts it; the same version is not
fetched again. ``beacon_model_version_info{model,version}`` shows the active version.

Without usable ``signing_public_keys`` nothing is loaded: the worker keeps the models it
started with and says so once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from engine.errors import StoreError
from engine.settings import Settings
from engine.store.base import SnapshotSource
from models.errors import SigningKeyError, SnapshotRefused
from models.metrics import ModelMetrics
from models.signing import SnapshotVersion, check_name

log = logging.getLogger("beacon.models")

Install = Callable[[str, str, object], None]


class ModelWatcher:
    """Keeps a worker's models on their current snapshot versions; one per worker process."""

    def __init__(
        self,
        store: SnapshotSource,
        install: Install,
        names: tuple[str, ...],
        settings: Settings,
        metrics: ModelMetrics,
    ) -> None:
        self.store = store
        self.install = install
        self.names = tuple(check_name(n) for n in names)
        self.poll_s = settings.model_poll_s
        self.metrics = metrics
        self.active: dict[str, str] = {}  # what decisions should record as model versions
        self.refused: dict[str, str] = {}
        self.loaded = asyncio.Event()  # set once the warm start has been tried for every model
        self._last_warning = ""
        for name in self.names:
            metrics.prepare(name)

    async def load_initial(self) -> dict[str, str]:
        """Warm start: install the current snapshot of every model that has one. One try
        each: a model without a usable snapshot keeps what the worker started with, and
        :meth:`watch` installs a version as soon as one can be loaded. Returns the active
        versions."""
        await self.check_all()
        self.loaded.set()
        return dict(self.active)

    async def check_all(self) -> list[str]:
        """One look at every model; returns the names that switched to a new version."""
        switched = []
        for name in self.names:
            try:
                if await self.check(name):
                    switched.append(name)
            except SigningKeyError as exc:  # the same for every model
                self._warn(f"models: {exc}; the running models stay")
                return switched
            except StoreError as exc:
                self._warn(f"models: cannot read snapshots from Redis ({exc}); the running models stay")
                return switched
        self._last_warning = ""
        return switched

    async def check(self, name: str) -> bool:
        """True when ``name`` switched to a newly published version."""
        version = await self.store.current_version(name)
        if version is None or version in (self.active.get(name), self.refused.get(name)):
            return False
        try:
            snapshot = await self.store.latest(name, self.active.get(name))
        except SnapshotRefused as exc:
            self._refuse(exc)
            return False
        if snapshot is None:
            return False
        version, model, meta = snapshot
        if version in (self.active.get(name), self.refused.get(name)):
            return False  # the pointer moved back between the two reads
        try:
            self.install(name, version, model)
        except Exception as exc:  # noqa: BLE001 - a model the worker will not run is refused
            self._refuse(SnapshotRefused(name, version, f"not installed ({type(exc).__name__}: {exc})"))
            return False
        self._switch(name, version, float(meta.get("published_at") or 0.0))
        return True

    def _refuse(self, exc: SnapshotRefused) -> None:
        self.refused[exc.name] = exc.version
        self.metrics.refused.labels(model=exc.name).inc()
        log.error("models: %s; %s stays in force", exc, self.active.get(exc.name) or "the built-in model")

    def _switch(self, name: str, version: str, published_at: float = 0.0) -> None:
        previous = self.active.get(name)
        self.active[name] = version
        self.refused.pop(name, None)
        self.metrics.active(name, version, published_at)
        self.metrics.swaps.labels(model=name).inc()
        if previous and SnapshotVersion.parse(version).number < SnapshotVersion.parse(previous).number:
            log.warning("models: %s went back from %s to %s (pointer moved back)", name, previous, version)
        log.info("models: %s now runs %s (was %s)", name, version, previous or "the built-in model")

    async def watch(self) -> None:
        """Forever: check every model, then wait for an announcement or ``model_poll_s``;
        on a Redis failure, keep the running models and try again a poll interval later."""
        while True:
            try:
                async with self.store.notifications() as notes:
                    while True:
                        await self.check_all()
                        await notes.wait(self.poll_s)
            except StoreError as exc:
                self._warn(f"models: watching Redis failed ({exc}); the running models stay")
            except Exception:  # the watcher must outlive any surprise
                log.exception("models: unexpected failure while watching; the running models stay")
            await asyncio.sleep(self.poll_s)

    async def run(self) -> None:
        """Warm start, then watch (a worker's background task)."""
        await self.load_initial()
        await self.watch()

    def _warn(self, message: str) -> None:
        """Log a repeated problem once, not every poll interval."""
        if message != self._last_warning:
            log.warning("%s", message)
            self._last_warning = message
