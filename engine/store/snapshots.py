"""Versioned, signed model snapshots in Redis: publish, verify-then-load, list, retain.

One trainer per model publishes; every scoring worker loads the current version (see
``engine/service/modelwatch.py``), so all workers score with the same model and learning never
forks. Signing and verification live in ``models/signing.py``; a snapshot is unpickled
only after its Ed25519 signature verifies, and a refused one raises :class:`SnapshotRefused`.

Keys: :class:`engine.store.keys.ModelKeys` (``N`` the model name; one model's keys share
one slot, so one script may change them all, and different models spread over the
cluster; every model's new versions are announced on ``P:models:changed``).

No key has a TTL (a model must not vanish while workers are down); each is bounded
instead, and one payload is at most ``max_bytes``. The kept versions are the ``keep``
newest; the current one is never dropped.

A publish takes two round trips: ``INCR seq`` reserves the number (the signature covers
the version, so the number must be known before signing; a refused publish leaves a gap in
the numbers), then one Lua script stores
record and payload, moves ``current``, appends history, trims and announces. That script
refuses (:class:`SnapshotConflict`) a version older than the current one, and, when the
publisher names the ``parent`` version it started from, any other current version: two
trainers publishing one model are detected instead of silently overwriting each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from engine.errors import StoreError
from engine.settings import Settings
from engine.store import signkeys
from engine.store.cancel import raise_if_cancelling
from engine.store.keys import ModelKeys, model_channel
from engine.store.redisio import redis_errors, text
from models import ed25519
from models.errors import ModelError, SigningKeyError, SnapshotConflict, SnapshotRefused, UnknownSnapshot
from models.signing import SnapshotVersion, pickle_model, seal, unseal, verify

__all__ = [
    "ANY",
    "Notifications",
    "SigningKeyError",
    "SnapshotConflict",
    "SnapshotInfo",
    "SnapshotRefused",
    "SnapshotStore",
]

KEEP_VERSIONS = 20
HISTORY_CAP = 200
MAX_SNAPSHOT_BYTES = 16 * 1024 * 1024
ANY: Final = "*"  # parent=ANY: publish whatever the current version is (no fork check)
_THREAD_BYTES = 256 * 1024  # hash bigger payloads off the event loop

# KEYS: current, records, payloads, ranks, history.
# ARGV: version, number, parent ('*' any, '' none, else a version), record, payload, keep,
#       history cap, channel, size, key id.
# Returns {1, version} when published, {0, current} when refused.
_PUBLISH = """
local cur = redis.call('GET', KEYS[1])
local parent = ARGV[3]
if parent ~= '*' and (cur or '') ~= parent then return {0, cur or ''} end
if cur then
  local n = redis.call('ZSCORE', KEYS[4], cur)
  if n and tonumber(n) >= tonumber(ARGV[2]) then return {0, cur} end
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[5])
redis.call('ZADD', KEYS[4], ARGV[2], ARGV[1])
redis.call('SET', KEYS[1], ARGV[1])
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('LPUSH', KEYS[5], cjson.encode({version = ARGV[1], action = 'publish', previous = cur or '',
  size = tonumber(ARGV[9]), key_id = ARGV[10], published_at = ms / 1000}))
redis.call('LTRIM', KEYS[5], 0, tonumber(ARGV[7]) - 1)
local excess = redis.call('ZCARD', KEYS[4]) - tonumber(ARGV[6])
if excess > 0 then
  for _, v in ipairs(redis.call('ZRANGE', KEYS[4], 0, excess - 1)) do
    if v ~= ARGV[1] then
      redis.call('HDEL', KEYS[2], v)
      redis.call('HDEL', KEYS[3], v)
      redis.call('ZREM', KEYS[4], v)
    end
  end
end
redis.call('PUBLISH', ARGV[8], ARGV[1])
return {1, ARGV[1]}
"""

# KEYS: current, records, payloads. The pointer, its record and its payload in one read.
_CURRENT = """
local v = redis.call('GET', KEYS[1])
if not v then return false end
return {v, redis.call('HGET', KEYS[2], v), redis.call('HGET', KEYS[3], v)}
"""


@dataclass(frozen=True)
class SnapshotInfo:
    """One stored version as its manifest describes it (listing only: not verified)."""

    version: str
    number: int
    size: int
    created_at: float
    key_id: str
    meta: dict[str, Any]
    current: bool


def _raw(value: Any) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    raise StoreError("the Redis client decodes responses; model snapshots need a client returning bytes")


class SnapshotStore:
    """Redis adapter for model snapshots. The client may be shared with the state store;
    it must return bytes (``decode_responses=False``, as ``engine.store.state.connect`` does)."""

    def __init__(
        self,
        client: aioredis.Redis,
        settings: Settings,
        keep: int = KEEP_VERSIONS,
        history_cap: int = HISTORY_CAP,
        max_bytes: int = MAX_SNAPSHOT_BYTES,
    ) -> None:
        if keep < 1 or history_cap < 1 or max_bytes < 1:
            raise ValueError("keep, history_cap and max_bytes must be at least 1")
        self._redis = client
        self.key_prefix = settings.key_prefix
        self._settings = settings  # keys read on use: listing needs none
        self.keep = keep
        self.history_cap = history_cap
        self.max_bytes = max_bytes
        self.channel = model_channel(settings.key_prefix)
        self._publish = client.register_script(_PUBLISH)
        self._current = client.register_script(_CURRENT)

    def keys(self, name: str) -> ModelKeys:
        return ModelKeys.of(self.key_prefix, name)

    def key_id(self) -> str:
        """The public id of the configured key (:class:`SigningKeyError` if unusable)."""
        return ed25519.key_id(signkeys.signer(self._settings).public_key())

    async def publish(
        self,
        name: str,
        model: object,
        meta: Mapping[str, Any] | None = None,
        *,
        parent: str | None = ANY,
        rollback_of: str | None = None,
    ) -> str:
        """Pickle, sign and store ``model`` as the new current version of ``name``.

        The model is pickled right here, on the caller's thread, so do not ``learn_one``
        on it from another thread meanwhile. ``parent``: the version this model was
        warm-started from (None: from nothing) to refuse the publish, with
        :class:`SnapshotConflict`, if another publisher moved the model meanwhile;
        the default :data:`ANY` only refuses going back to an older number.
        Raises :class:`SigningKeyError` without a usable key, :class:`ModelError` for a
        payload over ``max_bytes``."""
        keys = self.keys(name)
        key = signkeys.signer(self._settings)
        try:
            payload = model if isinstance(model, bytes) and rollback_of else pickle_model(model)
        except Exception as exc:  # pickle raises many types: one error at the boundary
            raise ModelError(f"model {name}: cannot be pickled ({type(exc).__name__}: {exc})") from exc
        if len(payload) > self.max_bytes:
            raise ModelError(
                f"model {name}: snapshot of {len(payload)} bytes is over the {self.max_bytes} byte limit; "
                "keep models small (see ARCHITECTURE.md on HalfSpaceTrees)"
            )
        with redis_errors("model snapshot publish"):
            number = int(await self._redis.incr(keys.seq))
        if len(payload) > _THREAD_BYTES:
            sealed = await asyncio.to_thread(seal, name, number, payload, meta, key, None, rollback_of)
        else:
            sealed = seal(name, number, payload, meta, key, rollback_of=rollback_of)
        args: list[str | bytes | int] = [sealed.version, number, "" if parent is None else parent]
        args += [sealed.record, payload, self.keep, self.history_cap, self.channel, len(payload)]
        args.append(sealed.manifest["key_id"])
        with redis_errors("model snapshot publish"):
            done, current = await self._publish(keys=keys.all()[1:], args=args)
        if int(done) != 1:
            now = text(current) or "none"
            expected = "is newer" if parent == ANY else f"is not {parent or 'none'}, the parent"
            raise SnapshotConflict(
                f"model {name}: {sealed.version} not published: the current version {now} {expected} "
                "(is another trainer publishing this model? learning must not fork)"
            )
        return sealed.version

    async def current_version(self, name: str) -> str | None:
        """The current version's name only: what a worker polls (one small GET)."""
        keys = self.keys(name)
        with redis_errors("model snapshot read"):
            raw = await self._redis.get(keys.current)
        return None if raw is None else text(raw)

    async def latest(
        self, name: str, running: str | None = None
    ) -> tuple[str, object, dict[str, Any]] | None:
        """The current version, its model and its meta; None before the first publish.

        The Ed25519 signature and the payload digest are verified before the payload is
        unpickled (in a thread, off the event loop); a snapshot that fails, or one numbered
        below ``running`` without a signed ``rollback_of``, raises :class:`SnapshotRefused`.
        Raises :class:`SigningKeyError` without usable public keys."""
        keys = self.keys(name)
        key = signkeys.trusted(self._settings)
        with redis_errors("model snapshot read"):
            reply = await self._current(keys=[keys.current, keys.records, keys.payloads])
        if not reply:
            return None
        version = text(reply[0])
        record, payload = _raw(reply[1]), _raw(reply[2])
        model, manifest = await asyncio.to_thread(unseal, name, version, record, payload, key, running)
        meta = dict(manifest.get("meta") or {})
        meta.setdefault("published_at", float(manifest.get("created_at", 0.0)))
        return version, model, meta

    async def load(self, name: str, version: str) -> object:
        """A stored version's model, verified before it is unpickled as :meth:`latest`
        verifies the current one (a backtest scores with a chosen version; nothing
        switches). :class:`UnknownSnapshot` when that version is not stored."""
        keys = self.keys(name)
        trusted = signkeys.trusted(self._settings)
        with redis_errors("model snapshot read"):
            record = _raw(await self._redis.hget(keys.records, version))
            payload = _raw(await self._redis.hget(keys.payloads, version))
        if record is None:
            raise UnknownSnapshot(f"model {name}: no stored version {version}")
        model, _ = await asyncio.to_thread(unseal, name, version, record, payload, trusted)
        return model

    async def rollback(self, name: str, version: str) -> str:
        """Republish stored ``version``'s payload as a new, higher version whose signed
        manifest says ``rollback_of``: the only way workers go back (versions only go up)."""
        keys = self.keys(name)
        trusted = signkeys.trusted(self._settings)
        with redis_errors("model snapshot read"):
            record = _raw(await self._redis.hget(keys.records, version))
            payload = _raw(await self._redis.hget(keys.payloads, version))
        manifest = await asyncio.to_thread(verify, name, version, record, payload, trusted)
        assert payload is not None  # verify refuses a missing payload
        return await self.publish(name, payload, dict(manifest.get("meta") or {}), rollback_of=version)

    async def versions(self, name: str) -> list[SnapshotInfo]:
        """Stored versions, newest first, as their manifests say (not verified: use
        :meth:`latest` to load one)."""
        keys = self.keys(name)
        with redis_errors("model snapshot read"):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.get(keys.current)
                pipe.zrevrange(keys.ranks, 0, -1)
                pipe.hgetall(keys.records)
                current, ranked, records = await pipe.execute()
        current = None if current is None else text(current)
        by_version = {text(k): v for k, v in records.items()}
        out = []
        for raw_version in ranked:
            version = text(raw_version)
            out.append(_info(name, version, by_version.get(version), version == current))
        return out

    async def history(self, name: str, limit: int = 20) -> list[dict[str, Any]]:
        """Publishes of ``name``, newest first."""
        if limit < 1:
            return []
        with redis_errors("model snapshot history read"):
            raw = await self._redis.lrange(self.keys(name).history, 0, limit - 1)
        return [orjson.loads(entry) for entry in raw]

    @contextlib.asynccontextmanager
    async def notifications(self) -> AsyncIterator[Notifications]:
        """Subscribe to publish announcements of every model (a faster wake-up than polling)."""
        pubsub: Any = self._redis.pubsub()  # redis-py's PubSub is not fully typed
        try:
            with redis_errors("model snapshot subscribe"):
                await self._redis.initialize()  # a cluster client must know its slots (redis-py#4296)
                await pubsub.subscribe(self.channel)
                await pubsub.get_message(timeout=1.0)  # the confirmation, so waits start clean
            yield Notifications(pubsub)
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()


def _info(name: str, version: str, record: Any, current: bool) -> SnapshotInfo:
    manifest: dict[str, Any] = {}
    if isinstance(record, bytes) and b"." in record:
        with contextlib.suppress(orjson.JSONDecodeError):
            loaded = orjson.loads(record.partition(b".")[2])
            manifest = loaded if isinstance(loaded, dict) else {}
    try:
        number = SnapshotVersion.parse(version).number
    except UnknownSnapshot:
        number = 0
    return SnapshotInfo(
        version=version,
        number=int(manifest.get("number", number)),
        size=int(manifest.get("size", 0)),
        created_at=float(manifest.get("created_at", 0.0)),
        key_id=str(manifest.get("key_id", "")),
        meta=dict(manifest.get("meta") or {}),
        current=current,
    )


class Notifications:
    """A live subscription to ``P:models:changed``."""

    def __init__(self, pubsub: Any) -> None:
        self._pubsub = pubsub

    async def wait(self, timeout: float) -> str | None:
        """The version announced, as soon as one is; None after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            with redis_errors("model snapshot subscription"):
                msg = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
            raise_if_cancelling()
            if msg is not None and msg.get("type") == "message":
                return text(msg["data"])
            # get_message returns early on control messages: never spin.
            await asyncio.sleep(min(max(deadline - time.monotonic(), 0.0), 0.05))
        return None
