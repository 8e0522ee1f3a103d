"""Versioned rule bundles in Redis: publish, read, list, roll back, seed.

Every worker reads its rules from here, so a publish reaches them all (see
``engine/service/rulewatch.py``). A version is ``v<n>-<digest>``: ``n`` counts publishes (one
Redis INCR), ``digest`` is :func:`engine.rules.pack.bundle_digest` of the files, so the
name alone says which bundle a decision ran (``versions.rules``).

Keys: :class:`engine.store.keys.RuleKeys` (one slot, so one script may change them all
at once, and the pub/sub channel ``P:rules:changed``).

No key has a TTL: rules must not vanish; each is bounded instead. The bundles kept
are those most recently made current, and the current one is never dropped.

A rollback makes a stored version current again under **the same version string**
(the bundle is the same, so decisions name exactly what they ran); the history gets a
new entry with ``action: rollback``. Publishing a bundle identical to an older one
gives a new version number with the same digest.

Writes are one Lua script each: a reader never sees the pointer before its bundle,
and two workers seeding at once cannot both seed.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from redis.exceptions import RedisError

from engine.errors import BeaconError, StoreError
from engine.rules.pack import bundle_digest
from engine.store.cancel import raise_if_cancelling
from engine.store.keys import RuleKeys
from engine.store.redisio import redis_errors, text
from models import ed25519

# What a rules bundle's signature covers: this domain, a newline, the bundle's digest (a
# hash of every file), so a snapshot's signature cannot pass for a bundle's.
RULES_DOMAIN = "beacon-rules-bundle/1"

KEEP_VERSIONS = 50
HISTORY_CAP = 200
_NOTE_MAX = 500
_AUTHOR_MAX = 100
_VERSION = re.compile(r"^v(\d+)-([0-9a-f]{12})$")

# Shared by the write scripts. KEYS: seq, current, bundles, ranks, history, shadow.
_COMMON = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function make_current(version, digest, action, author, note, cap, channel)
  local ms = now_ms()
  local rank = ms  -- strictly above every other rank, even within one millisecond
  local top = redis.call('ZREVRANGE', KEYS[4], 0, 0, 'WITHSCORES')
  if top[2] and tonumber(top[2]) >= rank then rank = tonumber(top[2]) + 1 end
  redis.call('SET', KEYS[2], version)
  redis.call('ZADD', KEYS[4], rank, version)
  redis.call('LPUSH', KEYS[5], cjson.encode({version = version, digest = digest, action = action,
    author = author, note = note, published_at = ms / 1000}))
  redis.call('LTRIM', KEYS[5], 0, cap - 1)
  redis.call('PUBLISH', channel, version)
end
local function trim(keep)
  local excess = redis.call('ZCARD', KEYS[4]) - keep
  if excess <= 0 then return end
  local current = redis.call('GET', KEYS[2])
  local shadow = redis.call('HGET', KEYS[6], 'version')  -- run beside it: kept like the current
  for _, v in ipairs(redis.call('ZRANGE', KEYS[4], 0, excess - 1)) do
    if v ~= current and v ~= shadow then
      redis.call('HDEL', KEYS[3], v)
      redis.call('ZREM', KEYS[4], v)
    end
  end
end
"""

# ARGV: action (publish | seed), digest, bundle JSON, author, note, keep, history cap, channel.
# Returns the new version, or false when seeding and a version already exists.
_PUBLISH = (
    _COMMON
    + """
if ARGV[1] == 'seed' and redis.call('EXISTS', KEYS[2]) == 1 then return false end
local version = 'v' .. redis.call('INCR', KEYS[1]) .. '-' .. ARGV[2]
redis.call('HSET', KEYS[3], version, ARGV[3])
make_current(version, ARGV[2], ARGV[1], ARGV[4], ARGV[5], tonumber(ARGV[7]), ARGV[8])
trim(tonumber(ARGV[6]))
return version
"""
)

# ARGV: version, digest, author, note, history cap, channel.
# Returns 1 (now current), 2 (already current) or 0 (not stored).
_ROLLBACK = (
    _COMMON
    + """
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 0 then return 0 end
if redis.call('GET', KEYS[2]) == ARGV[1] then return 2 end
make_current(ARGV[1], ARGV[2], 'rollback', ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6])
return 1
"""
)

# KEYS: current, bundles. The pointer and its bundle in one atomic read.
_CURRENT = """
local v = redis.call('GET', KEYS[1])
if not v then return false end
return {v, redis.call('HGET', KEYS[2], v)}
"""


class UnknownVersion(BeaconError):
    """The version asked for is not stored (never published, or older than the kept ones)."""


@dataclass(frozen=True)
class Version:
    """A parsed version name.

    >>> Version.parse("v12-0123456789ab")
    Version(number=12, digest='0123456789ab')
    >>> Version.parse("latest")
    Traceback (most recent call last):
    ...
    engine.store.rules.UnknownVersion: 'latest' is not a rules version (they look like v12-0123456789ab)
    """

    number: int
    digest: str

    @classmethod
    def parse(cls, name: str) -> Version:
        m = _VERSION.match(name)
        if not m:
            raise UnknownVersion(f"{name!r} is not a rules version (they look like v12-0123456789ab)")
        return cls(int(m[1]), m[2])


def _files(raw: Any, version: str) -> dict[str, str]:
    try:
        files = orjson.loads(raw)["files"]
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise StoreError(f"rules version {version}: the stored bundle is unreadable ({exc})") from exc
    return {str(k): str(v) for k, v in files.items()}


def _signature(raw: Any) -> str | None:
    try:
        sig = orjson.loads(raw).get("sig")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return sig if isinstance(sig, str) else None


class RuleStore:
    """Redis adapter for rule versions. The client is shared with the state store."""

    def __init__(
        self,
        client: aioredis.Redis,
        key_prefix: str,
        keep: int = KEEP_VERSIONS,
        history_cap: int = HISTORY_CAP,
        signer: Ed25519PrivateKey | None = None,
    ) -> None:
        """``signer``: the publisher's key (the admin CLI's ``signing_key_file``): every
        bundle published through this store is signed with it."""
        if keep < 1 or history_cap < 1:
            raise ValueError("keep and history_cap must be at least 1")
        self._redis = client
        self.keys = RuleKeys.of(key_prefix)
        self.keep = keep
        self.history_cap = history_cap
        self.signer = signer
        self._publish = client.register_script(_PUBLISH)
        self._rollback = client.register_script(_ROLLBACK)
        self._current = client.register_script(_CURRENT)

    async def publish(
        self, files: Mapping[str, str], author: str, note: str = "", signer: Ed25519PrivateKey | None = None
    ) -> str:
        """Store a bundle as a new version and make it current; returns the version. With
        ``signer`` (the publisher's Ed25519 key) the bundle carries a signature over its
        digest, which workers check before they run it (engine/service/rulewatch.py)."""
        version = await self._write("publish", files, author, note, signer or self.signer)
        assert version is not None  # only a seed may find a version already there
        return version

    async def seed_if_empty(
        self, files: Mapping[str, str], author: str = "beacon worker", note: str = ""
    ) -> str | None:
        """Publish ``files`` only if no version exists yet (atomic: one seeder wins).
        Returns the new version, or None when one was already there."""
        return await self._write("seed", files, author, note)

    async def _write(
        self, action: str, files: Mapping[str, str], author: str, note: str, signer: Any = None
    ) -> str | None:
        if not files:
            raise BeaconError("a rules bundle needs at least one file")
        digest = bundle_digest(files)
        stored: dict[str, Any] = {"digest": digest, "files": dict(files)}
        if signer is not None:
            stored["sig"] = ed25519.sign(signer, RULES_DOMAIN, digest.encode())
        bundle = orjson.dumps(stored)
        args: list[str | bytes | int] = [action, digest, bundle, author[:_AUTHOR_MAX], note[:_NOTE_MAX]]
        args += [self.keep, self.history_cap, self.keys.channel]
        with redis_errors("rules " + action):
            version = await self._publish(keys=self.keys.writes(), args=args)
        return None if version is None else text(version)

    async def rollback(self, version: str, author: str, note: str = "") -> bool:
        """Make a stored version current again (same version string, new history entry).
        Returns False when it already is current; raises :class:`UnknownVersion` when it
        is not stored."""
        parsed = Version.parse(version)
        args: list[str | int] = [version, parsed.digest, author[:_AUTHOR_MAX], note[:_NOTE_MAX]]
        args += [self.history_cap, self.keys.channel]
        with redis_errors("rules rollback"):
            done = int(await self._rollback(keys=self.keys.writes(), args=args))
        if done == 0:
            raise UnknownVersion(
                f"version {version} is not stored (Redis keeps the last {self.keep} versions); "
                "see `beacon rules history`"
            )
        return done == 1

    async def current_version(self) -> str | None:
        """The current version's name only: what a worker polls (one small GET)."""
        with redis_errors("rules read"):
            raw = await self._redis.get(self.keys.current)
        return None if raw is None else text(raw)

    async def current(self) -> tuple[str, dict[str, str]] | None:
        """The current version and its files, read together, or None before any publish."""
        signed = await self.current_signed()
        return None if signed is None else (signed[0], signed[1])

    async def current_signed(self) -> tuple[str, dict[str, str], str | None] | None:
        """The current version, its files and its signature (None: published unsigned)."""
        with redis_errors("rules read"):
            reply = await self._current(keys=[self.keys.current, self.keys.bundles])
        if not reply:
            return None
        version = text(reply[0])
        if reply[1] is None:  # only if someone deleted the bundle by hand
            raise StoreError(f"rules version {version} is current but its bundle is missing")
        sig = _signature(reply[1])
        return version, _files(reply[1], version), sig

    async def bundle(self, version: str) -> dict[str, str]:
        """The files of a stored version; :class:`UnknownVersion` if it is not stored."""
        Version.parse(version)
        with redis_errors("rules read"):
            raw = await self._redis.hget(self.keys.bundles, version)
        if raw is None:
            raise UnknownVersion(
                f"version {version} is not stored (Redis keeps the last {self.keep} versions); "
                "see `beacon rules history`"
            )
        return _files(raw, version)

    async def history(self, limit: int = 20) -> list[dict[str, Any]]:
        """Publishes, seeds and rollbacks, newest first."""
        if limit < 1:
            return []
        with redis_errors("rules history read"):
            raw = await self._redis.lrange(self.keys.history, 0, limit - 1)
        return [orjson.loads(entry) for entry in raw]

    @contextlib.asynccontextmanager
    async def notifications(self) -> AsyncIterator[Notifications]:
        """Subscribe to publish announcements (a faster wake-up than polling alone)."""
        pubsub: Any = self._redis.pubsub()  # redis-py's PubSub is not fully typed
        try:
            with redis_errors("rules subscribe"):
                await self._redis.initialize()  # a cluster client must know its slots (redis-py#4296)
                await pubsub.subscribe(self.keys.channel)
                await pubsub.get_message(timeout=1.0)  # the confirmation, so waits start clean
            yield Notifications(pubsub)
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()


class Notifications:
    """A live subscription to ``P:rules:changed``."""

    def __init__(self, pubsub: Any) -> None:
        self._pubsub = pubsub

    async def wait(self, timeout: float) -> bool:
        """True as soon as a version is announced; False after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            with redis_errors("rules subscription"):
                msg = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
            raise_if_cancelling()
            if msg is not None:
                return True
            # get_message returns early on control messages: never spin.
            await asyncio.sleep(min(max(deadline - time.monotonic(), 0.0), 0.05))
        return False
