"""Hot reload of rules in a running worker.

At start-up the worker loads the current version from Redis (seeding Redis from
``settings.rules_path()`` when it holds none). Then it wakes on every publish
announcement, and at the latest every ``rules_poll_s`` (announcements can be lost),
reads the current pointer and, when it names a new version, fetches, compiles and
swaps ``service.rules`` in one assignment. The decision service reads that attribute
once per batch, so every decision runs one whole version, old or new.

A version that does not compile is refused: the running one stays in force, the
error is logged once and ``beacon_rules_reload_failures_total`` counts it.

The shadow version (engine/store/ruleshadow.py) is watched the same way, on the same
wake-ups: a new one is checked (signature, digest, compile) and swapped into
``service.shadow_rules``, which engine/service/shadow.py runs beside the live rules; a
refused one (or none) leaves ``service.shadow_rules`` None.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Mapping

from engine.decide.rulebook import load
from engine.errors import StoreError
from engine.rules.pack import RulePackError, bundle_digest, read_bundle
from engine.rules.ruleset import RuleSet
from engine.service.decisions import DecisionService
from engine.service.metrics import Metrics
from engine.settings import Settings
from engine.store.base import RuleSource
from engine.store.rules import RULES_DOMAIN, UnknownVersion, Version
from engine.store.ruleshadow import ShadowStore
from engine.store.signkeys import public_key_files, trusted
from models import ed25519
from models.errors import SignatureRefused

log = logging.getLogger("beacon.rules")


def compile_version(version: str, files: Mapping[str, str], settings: Settings) -> RuleSet:
    """Rules of a stored version, checked against its digest, compiled and dry-run.

    Raises :class:`RulePackError` when the bundle is refused."""
    try:
        digest = Version.parse(version).digest
    except UnknownVersion as exc:
        raise RulePackError(str(exc)) from None
    if bundle_digest(files) != digest:
        raise RulePackError(f"version {version}: the stored files do not match the version's digest")
    return load(files, frozenset(settings.channels), version, settings.event_types).rules


class RuleWatcher:
    """Keeps ``service.rules`` on the current version; one per worker process."""

    def __init__(
        self,
        store: RuleSource,
        service: DecisionService,
        settings: Settings,
        metrics: Metrics,
        readiness: dict[str, bool],
        shadow: ShadowStore | None = None,
    ) -> None:
        self.store = store
        self.shadow_store = shadow
        self.shadow_active: str | None = None  # the shadow version this worker runs
        self.shadow_refused: str | None = None
        self.service = service
        self.settings = settings
        self.metrics = metrics
        self.readiness = readiness
        self.active: str | None = None
        self.refused: str | None = None
        self.loaded = asyncio.Event()
        self._last_warning = ""
        # Who may publish rules: the holders of the private keys these verify (the admin
        # CLI, `beacon rules publish`); none configured: nothing to check with (development).
        self._keys = trusted(settings) if public_key_files(settings) else []
        self._local: str | None = None  # digest of this worker's own packs, once read

    async def load_initial(self) -> None:
        """Return once a version runs. Seeds Redis from ``rules_dir`` if it has none;
        retries (Redis down, or only a refused version published) every ``rules_poll_s``."""
        while self.active is None:
            try:
                if await self.store.current_version() is None:
                    await self._seed()
                await self.check()
            except StoreError as exc:
                self._warn(f"rules: cannot read the current version from Redis ({exc}); retrying")
            if self.active is None:
                await asyncio.sleep(self.settings.rules_poll_s)

    async def _seed(self) -> None:
        """First worker of a deployment: publish the local packs, if they are valid."""
        path = self.settings.rules_path()
        try:
            files = read_bundle(path)
            await asyncio.to_thread(
                load, files, frozenset(self.settings.channels), "seed", self.settings.event_types
            )
        except RulePackError as exc:
            self._warn(f"rules: Redis holds no version and the packs in {path} are refused: {exc}")
            return
        seeded = await self.store.seed_if_empty(
            files, author=f"worker on {socket.gethostname()}", note=f"seeded from {path}"
        )
        if seeded:
            log.info("rules: Redis held no version; published %s from %s", seeded, path)

    async def check(self) -> bool:
        """One look at the current and shadow pointers; True when this switched to a new
        current version."""
        switched = await self._check_live()
        await self.check_shadow()
        return switched

    async def _check_live(self) -> bool:
        version = await self.store.current_version()
        if version is None or version in (self.active, self.refused):
            return False
        current = await self.store.current_signed()
        if current is None or current[0] in (self.active, self.refused):
            return False
        version, files, signature = current
        distrust = self._untrusted(files, signature)
        if distrust is not None:
            self._refuse(version, RulePackError(distrust))
            return False
        try:
            # A thread, so a large bundle does not stall decisions on the event loop.
            rules = await asyncio.to_thread(compile_version, version, files, self.settings)
        except Exception as exc:  # noqa: BLE001 - any failure to build a version refuses it
            self._refuse(version, exc)
            return False
        self._switch(rules)
        return True

    async def check_shadow(self) -> None:
        """Run the shadow version Redis names (none: stop running one)."""
        if self.shadow_store is None:
            return
        version = await self.shadow_store.version()
        if version == self.shadow_active or (version is not None and version == self.shadow_refused):
            return
        got = None if version is None else await self.shadow_store.signed()
        if got is None:
            self._shadow(None)
            return
        version, files, signature = got
        distrust = self._untrusted(files, signature)
        try:
            if distrust is not None:
                raise RulePackError(distrust)
            rules = await asyncio.to_thread(compile_version, version, files, self.settings)
        except Exception as exc:  # noqa: BLE001 - any failure to build a version refuses it
            self._shadow(None)
            self.shadow_refused = version
            self.metrics.rules_reload_failures.inc()
            log.error("rules: shadow version %s refused, none runs in shadow: %s", version, exc)
            return
        self._shadow(rules)

    def _shadow(self, rules: RuleSet | None) -> None:
        before = self.shadow_active
        self.service.shadow_rules = rules  # read once per batch, like service.rules
        self.shadow_active = None if rules is None else rules.version
        self.shadow_refused = None
        self.metrics.shadow.running.set(0 if rules is None else 1)
        if before != self.shadow_active:
            log.info("rules: shadow version now %s (was %s)", self.shadow_active, before)

    async def status(self) -> dict[str, object]:
        """The live and shadow versions, as Redis names them and as this worker runs them
        (``GET /v1/rules``)."""
        current = await self.store.current_version()
        shadow = await self.shadow_store.status() if self.shadow_store is not None else None
        if shadow is not None:
            shadow["running"] = shadow["version"] == self.shadow_active
        return {"live": {"version": current, "running": self.active}, "shadow": shadow}

    def _untrusted(self, files: Mapping[str, str], signature: str | None) -> str | None:
        """Why a bundle may not run here, or None: it is signed by a trusted key, or it is
        this worker's own packs (the seed a worker publishes unsigned from its image)."""
        if not self._keys:
            return None
        digest = bundle_digest(files)
        if digest == self._local_digest():
            return None
        if signature is None:
            return (
                "the bundle is not signed: publish it with `beacon rules publish` (BEACON_SIGNING_KEY_FILE)"
            )
        try:
            ed25519.verify(self._keys, RULES_DOMAIN, digest.encode(), signature)
        except SignatureRefused as exc:
            return f"the bundle's signature is refused: {exc}"
        return None

    def _local_digest(self) -> str | None:
        if self._local is None:
            try:
                self._local = bundle_digest(read_bundle(self.settings.rules_path()))
            except (RulePackError, OSError):
                self._local = ""
        return self._local or None

    def _refuse(self, version: str, exc: Exception) -> None:
        self.refused = version
        self.metrics.rules_reload_failures.inc()
        detail = str(exc) if isinstance(exc, RulePackError) else f"{type(exc).__name__}: {exc}"
        log.error(
            "rules: version %s refused, %s stays in force: %s", version, self.active or "nothing", detail
        )

    def _switch(self, rules: RuleSet) -> None:
        previous = self.active
        self.service.rules = rules  # one assignment: each batch sees one whole version
        self.active = rules.version
        self.refused = None
        self.metrics.rules_version(rules.version, frozenset(o.id for o in rules.offers))
        self.metrics.rules_reloads.inc()
        self.readiness["rules"] = True
        self.loaded.set()
        log.info("rules: now running %s (was %s)", rules.version, previous or "nothing")

    async def watch(self) -> None:
        """Forever: check, then wait for an announcement or ``rules_poll_s``; on a Redis
        failure, keep the running version and try again a poll interval later."""
        poll = self.settings.rules_poll_s
        while True:
            try:
                async with self.store.notifications() as notes:
                    while True:
                        await self.check()
                        self._last_warning = ""
                        await notes.wait(poll)
            except StoreError as exc:
                self._warn(f"rules: watching Redis failed ({exc}); {self.active} stays in force")
            except Exception:  # the watcher must outlive any surprise
                log.exception("rules: unexpected failure while watching; %s stays in force", self.active)
            await asyncio.sleep(poll)

    def _warn(self, message: str) -> None:
        """Log a repeated problem once, not every poll interval."""
        if message != self._last_warning:
            log.warning("%s", message)
            self._last_warning = message
