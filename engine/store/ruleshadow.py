"""The shadow rules version: a candidate bundle every worker runs beside the current one.

``beacon rules publish --shadow DIR`` stores a bundle as a new version (same numbering,
digest and signature as a live publish: engine/store/rules.py) without making it
current, and points ``shadow`` at it. Workers run it on every decision and act on none of
it (engine/service/shadow.py). ``beacon rules promote`` makes it live: a signed publish
of the same files as a new current version, the shadow cleared in the same script;
``beacon rules shadow --stop`` ends it. Each of the three adds a history entry
(``shadow``, ``promote``, ``shadow_stop``) and announces itself on the rules channel, so
workers pick it up as fast as a publish.

Keys: :class:`engine.store.keys.RuleKeys` (``shadow`` is a hash: version, author, note,
since_ms). A shadow version's bundle is kept like the current one (never trimmed while
it is the shadow).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import redis.asyncio as aioredis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from engine.errors import BeaconError, StoreError
from engine.rules.pack import bundle_digest
from engine.store.keys import RuleKeys
from engine.store.redisio import redis_errors, text
from engine.store.rules import _COMMON, HISTORY_CAP, KEEP_VERSIONS, RULES_DOMAIN, _files, _signature
from models import ed25519

_NOTE_MAX, _AUTHOR_MAX = 500, 100

# KEYS: RuleKeys.writes(). ARGV: digest, bundle JSON, author, note, keep, history cap, channel.
_START = (
    _COMMON
    + """
local version = 'v' .. redis.call('INCR', KEYS[1]) .. '-' .. ARGV[1]
local ms = now_ms()
redis.call('HSET', KEYS[3], version, ARGV[2])
redis.call('ZADD', KEYS[4], ms, version)
redis.call('DEL', KEYS[6])
redis.call('HSET', KEYS[6], 'version', version, 'author', ARGV[3], 'note', ARGV[4], 'since_ms', tostring(ms))
redis.call('LPUSH', KEYS[5], cjson.encode({version = version, digest = ARGV[1], action = 'shadow',
  author = ARGV[3], note = ARGV[4], published_at = ms / 1000}))
redis.call('LTRIM', KEYS[5], 0, tonumber(ARGV[6]) - 1)
redis.call('PUBLISH', ARGV[7], 'shadow:' .. version)
trim(tonumber(ARGV[5]))
return version
"""
)

# ARGV: author, note, history cap, channel. Returns the version stopped, or false.
_STOP = (
    _COMMON
    + """
local version = redis.call('HGET', KEYS[6], 'version')
if not version then return false end
redis.call('DEL', KEYS[6])
redis.call('LPUSH', KEYS[5], cjson.encode({version = version, digest = string.match(version, '%-(%x+)$'),
  action = 'shadow_stop', author = ARGV[1], note = ARGV[2], published_at = now_ms() / 1000}))
redis.call('LTRIM', KEYS[5], 0, tonumber(ARGV[3]) - 1)
redis.call('PUBLISH', ARGV[4], 'shadow:')
return version
"""
)

# ARGV: the shadow version promoted, digest, bundle JSON, author, note, keep, cap, channel.
# Returns the new current version, or false when the shadow is no longer that version.
_PROMOTE = (
    _COMMON
    + """
if redis.call('HGET', KEYS[6], 'version') ~= ARGV[1] then return false end
local version = 'v' .. redis.call('INCR', KEYS[1]) .. '-' .. ARGV[2]
redis.call('HSET', KEYS[3], version, ARGV[3])
redis.call('DEL', KEYS[6])
make_current(version, ARGV[2], 'promote', ARGV[4], ARGV[5], tonumber(ARGV[7]), ARGV[8])
trim(tonumber(ARGV[6]))
return version
"""
)

# KEYS: shadow, bundles. The shadow pointer and its bundle in one atomic read.
_READ = """
local v = redis.call('HGET', KEYS[1], 'version')
if not v then return false end
return {v, redis.call('HGET', KEYS[2], v)}
"""


class ShadowChanged(BeaconError):
    """The shadow version changed (or ended) while a promotion was being checked."""


class ShadowStore:
    """Redis adapter for the shadow version; shares :class:`RuleStore`'s keys and client."""

    def __init__(
        self,
        client: aioredis.Redis,
        key_prefix: str,
        keep: int = KEEP_VERSIONS,
        history_cap: int = HISTORY_CAP,
        signer: Ed25519PrivateKey | None = None,
    ) -> None:
        self._redis = client
        self.keys = RuleKeys.of(key_prefix)
        self.keep, self.history_cap, self.signer = keep, history_cap, signer
        self._start = client.register_script(_START)
        self._stop = client.register_script(_STOP)
        self._promote = client.register_script(_PROMOTE)
        self._read = client.register_script(_READ)

    def _bundle(self, files: Mapping[str, str]) -> tuple[str, bytes]:
        if not files:
            raise BeaconError("a rules bundle needs at least one file")
        digest = bundle_digest(files)
        stored: dict[str, Any] = {"digest": digest, "files": dict(files)}
        if self.signer is not None:  # signed like a live bundle: workers check it the same way
            stored["sig"] = ed25519.sign(self.signer, RULES_DOMAIN, digest.encode())
        return digest, orjson.dumps(stored)

    async def start(self, files: Mapping[str, str], author: str, note: str = "") -> str:
        """Store ``files`` as a new version and make it the shadow (replacing any)."""
        digest, bundle = self._bundle(files)
        args: list[str | bytes | int] = [digest, bundle, author[:_AUTHOR_MAX], note[:_NOTE_MAX]]
        args += [self.keep, self.history_cap, self.keys.channel]
        with redis_errors("rules shadow"):
            return text(await self._start(keys=self.keys.writes(), args=args))

    async def stop(self, author: str, note: str = "") -> str | None:
        """End the shadow run; returns the version that was shadowed, or None if none was."""
        args: list[str | int] = [author[:_AUTHOR_MAX], note[:_NOTE_MAX], self.history_cap, self.keys.channel]
        with redis_errors("rules shadow stop"):
            stopped = await self._stop(keys=self.keys.writes(), args=args)
        return None if stopped is None else text(stopped)

    async def promote(self, shadow: str, files: Mapping[str, str], author: str, note: str = "") -> str:
        """Publish the shadow's ``files`` as the new current version and end the shadow,
        atomically, if the shadow is still ``shadow``; :class:`ShadowChanged` if not."""
        digest, bundle = self._bundle(files)
        args: list[str | bytes | int] = [shadow, digest, bundle, author[:_AUTHOR_MAX], note[:_NOTE_MAX]]
        args += [self.keep, self.history_cap, self.keys.channel]
        with redis_errors("rules promote"):
            version = await self._promote(keys=self.keys.writes(), args=args)
        if version is None:
            raise ShadowChanged(f"the shadow version is no longer {shadow}: nothing was promoted")
        return text(version)

    async def status(self) -> dict[str, Any] | None:
        """{version, author, note, since} of the shadow run, or None when there is none."""
        with redis_errors("rules shadow read"):
            raw = await self._redis.hgetall(self.keys.shadow)
        if not raw:
            return None
        fields = {text(k): text(v) for k, v in raw.items()}
        since = int(float(fields.get("since_ms", "0") or 0)) / 1000
        return {"version": fields.get("version", ""), "author": fields.get("author", ""),
                "note": fields.get("note", ""), "since": since}  # fmt: skip

    async def version(self) -> str | None:
        """The shadow version's name only: what a worker polls (one small HGET)."""
        with redis_errors("rules shadow read"):
            raw = await self._redis.hget(self.keys.shadow, "version")
        return None if raw is None else text(raw)

    async def signed(self) -> tuple[str, dict[str, str], str | None] | None:
        """The shadow version, its files and its signature, read together; None: no shadow."""
        with redis_errors("rules shadow read"):
            reply = await self._read(keys=[self.keys.shadow, self.keys.bundles])
        if not reply:
            return None
        version = text(reply[0])
        if reply[1] is None:
            raise StoreError(f"rules version {version} is the shadow but its bundle is missing")
        return version, _files(reply[1], version), _signature(reply[1])
