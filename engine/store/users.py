"""Who may call what: per-channel API tokens for channel systems, user logins for people,
roles, and the checks every endpoint but health makes.

Secrets are stored only as hashes: tokens (32 random bytes) as SHA-256, passwords with
scrypt and a per-user salt; comparisons are constant-time; nothing secret is logged.
A token reads ``bk_<id>_<secret>``: the id finds the record, the secret proves it.

A token expires (``expires``, set at creation: ``token_ttl_s`` by default, at most
``token_max_s``; a token made before expiry existed lapses ``token_max_s`` after its
creation) and is revoked by deleting it (:meth:`AuthStore.revoke_token`). A session
names its user and the user's session generation (``epochs``) at login, never a role:
the role is read from the user's record on each check, and replacing the user (a role
change or a password reset), removing them or revoking their sessions moves the
generation on, which ends every session they hold. A session also ends when unused for
``idle_s`` (sliding: each check in Redis moves it on) and ``ttl_s`` after login at most.

Keys: :class:`engine.store.keys.AuthKeys`.

>>> allowed("channel", "decide"), allowed("channel", "read")
(True, False)
>>> allowed("viewer", "read"), allowed("viewer", "work")
(True, False)
>>> [allowed("analyst", p) for p in ("report", "read", "work", "profile", "admin")]
[True, True, False, False, False]
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis

from engine.errors import BeaconError
from engine.store.keys import AuthKeys
from engine.store.redisio import guarded

PERMISSIONS = {
    "channel": frozenset({"decide", "score"}),  # score: outbound, its own channel only
    "viewer": frozenset({"read", "profile_history", "report"}),
    "risk_officer": frozenset({"read", "work", "profile_history"}),
    "risk_admin": frozenset({"read", "work", "admin", "score", "profile_history", "report"}),
    # The bank's marketing and risk analysts (issue 18): read customers, alerts and the
    # offer reports; change nothing (no alert work, no profile, no decision).
    "analyst": frozenset({"read", "report"}),
    "campaign": frozenset({"score"}),  # outbound campaign tools and analysts: any channel
    # The bank's CRM system (a token) or its staff: the only writer of customers' profiles
    # (issue 17, finding 2); reads what it wrote, and nothing of alerts or decisions.
    "crm": frozenset({"profile", "profile_history"}),
}
ROLES = tuple(PERMISSIONS)
_LOGIN_TRIES_PER_MINUTE = 5
_PER_ADDRESS, _PER_USER = 4, 10  # times the per user and address limit, across users / addresses
_LONGEST_DELAY_S = 900
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}
# Count the attempt, then check, in one step, so concurrent attempts cannot all read a
# count below the limit. KEYS are counters in order (address, user and address, user);
# ARGV: the window (s), the longest delay (s), then each counter's limit. A counter is
# incremented (its window set on the first) and compared before the next is touched:
# an attempt refused by one does not count against the others. Over its limit, a
# counter lives on for a delay that doubles with every further attempt (from the
# window, up to the longest): a delay, not a lockout. Returns 0 to go ahead, else the
# seconds to wait.
_COUNT = """
local window, longest = tonumber(ARGV[1]), tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  local n, limit = redis.call('INCR', key), tonumber(ARGV[2 + i])
  if n == 1 then redis.call('EXPIRE', key, window) end
  if n > limit then
    local delay = math.floor(math.min(window * 2 ^ math.min(n - limit - 1, 30), longest))
    local ttl = redis.call('TTL', key)
    if delay > ttl then
      redis.call('EXPIRE', key, delay)
      ttl = delay
    end
    return math.max(ttl, 1)
  end
end
return 0
"""
# A success takes its count back, never below zero nor into a key already expired.
_REFUND = """
for _, key in ipairs(KEYS) do
  if tonumber(redis.call('GET', key) or '0') > 0 then redis.call('DECR', key) end
end
"""


class AuthError(BeaconError):
    """Bad input to user or token management (unknown role, weak password...)."""


class TooManyLogins(BeaconError):
    """Login is delayed for this user or address; retry in ``wait_s`` seconds."""

    def __init__(self, message: str, wait_s: int = 60) -> None:
        super().__init__(message)
        self.wait_s = wait_s


@dataclass(frozen=True)
class Principal:
    name: str
    role: str
    channel: str | None = None  # a channel token may only decide for its channel

    def may(self, permission: str) -> bool:
        return allowed(self.role, permission)


def allowed(role: str, permission: str) -> bool:
    return permission in PERMISSIONS.get(role, frozenset())


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _scrypt(password: str, salt: bytes) -> str:
    return hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT).hex()


class AuthStore:
    def __init__(
        self,
        client: aioredis.Redis,
        key_prefix: str,
        session_ttl_s: int = 8 * 3600,
        failures_per_minute: int = _LOGIN_TRIES_PER_MINUTE,
        hash_threads: int = 2,
        session_idle_s: int = 30 * 60,
        token_ttl_s: int = 90 * 86400,
        token_max_s: int = 365 * 86400,
    ) -> None:
        self._r = client
        self.keys = AuthKeys.of(key_prefix)
        self.session_ttl_s = session_ttl_s
        self.session_idle_s = min(session_idle_s, session_ttl_s)
        self.token_ttl_s, self.token_max_s = min(token_ttl_s, token_max_s), token_max_s
        self.failures_per_minute = failures_per_minute
        # scrypt (tens of ms of CPU, and it releases the GIL) runs here, never on the event loop
        self._hashing = ThreadPoolExecutor(max(1, hash_threads), thread_name_prefix="scrypt")
        self._count = client.register_script(_COUNT)
        self._refund = client.register_script(_REFUND)

    async def add_user(self, name: str, role: str, password: str) -> None:
        if role not in ROLES or role == "channel":
            raise AuthError(f"a person's role is one of {', '.join(r for r in ROLES if r != 'channel')}")
        if (
            not name
            or len(name) > 100
            or not name.replace("_", "").replace(".", "").replace("-", "").isalnum()
        ):
            raise AuthError("user names are letters, digits, '.', '_' and '-', at most 100")
        if len(password) < 12:
            raise AuthError("passwords have at least 12 characters")
        salt = secrets.token_bytes(16)
        digest = await self._scrypt(password, salt)
        record = {"role": role, "salt": salt.hex(), "hash": digest, "created": time.time()}
        await self._call(self._r.hset(self.keys.users, name, orjson.dumps(record)))
        # After the record: a login that read the old generation is refused, whichever
        # password it checked (a login reads the generation before the record).
        await self.revoke_sessions(name)

    async def remove_user(self, name: str) -> bool:
        """Remove a person's login, ending their sessions; False if there was none."""
        removed = int(await self._call(self._r.hdel(self.keys.users, name)))
        await self.revoke_sessions(name)
        return removed > 0

    async def revoke_sessions(self, name: str) -> None:
        """End every session the person holds (their next login starts a new one)."""
        await self._call(self._r.hincrby(self.keys.epochs, name, 1))

    async def add_token(
        self, role: str, name: str, channel: str | None = None, expires_s: int | None = None
    ) -> str:
        """A new API token; the plaintext is returned once and never stored. It expires
        ``expires_s`` from now (default ``token_ttl_s``, at most ``token_max_s``)."""
        if role not in ROLES:
            raise AuthError(f"role is one of {', '.join(ROLES)}")
        if role == "channel" and not channel:
            raise AuthError("a channel token names its channel")
        lifetime = self.token_ttl_s if expires_s is None else expires_s
        if not 0 < lifetime <= self.token_max_s:
            raise AuthError(f"a token lives at most {self.token_max_s // 86400} days ({self.token_max_s} s)")
        token_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        now = time.time()
        record = {
            "role": role,
            "channel": channel,
            "name": name,
            "hash": _sha(secret),
            "created": now,
            "expires": now + lifetime,
        }
        await self._call(self._r.hset(self.keys.tokens, token_id, orjson.dumps(record)))
        return f"bk_{token_id}_{secret}"

    async def revoke_token(self, token_id: str) -> bool:
        """Delete a token by its id; False if there was none."""
        removed = int(await self._call(self._r.hdel(self.keys.tokens, token_id)))
        await self._call(self._r.hdel(self.keys.token_used, token_id))
        return removed > 0

    async def tokens(self) -> dict[str, dict[str, Any]]:
        """Tokens by id: name, role, channel, created, expires and last used (epoch
        seconds; last used is when a worker last checked it in Redis, None if never)."""
        raw = await self._call(self._r.hgetall(self.keys.tokens))
        used = await self._call(self._r.hgetall(self.keys.token_used))
        out = {}
        for k, v in raw.items():
            record = orjson.loads(v)
            last = used.get(k)
            out[k.decode()] = {
                "name": record.get("name"),
                "role": record["role"],
                "channel": record.get("channel"),
                "created": record.get("created"),
                "expires": self._expires(record),
                "last_used": float(last) if last is not None else None,
            }
        return out

    def _expires(self, record: dict[str, Any]) -> float:
        return float(record.get("expires") or float(record.get("created") or 0) + self.token_max_s)

    async def users(self) -> dict[str, dict[str, Any]]:
        raw = await self._call(self._r.hgetall(self.keys.users))
        return {k.decode(): {"role": orjson.loads(v)["role"]} for k, v in raw.items()}

    async def token_principal(self, token: str) -> Principal | None:
        parts = token.split("_", 2)
        if len(parts) != 3 or parts[0] != "bk":
            return None
        raw = await self._call(self._r.hget(self.keys.tokens, parts[1]))
        if not raw:
            _sha(parts[2])  # the same work whether or not the id exists
            return None
        record = orjson.loads(raw)
        if not hmac.compare_digest(_sha(parts[2]), record["hash"]):
            return None
        if time.time() >= self._expires(record):
            return None
        await self._call(self._r.hset(self.keys.token_used, parts[1], str(time.time())))
        return Principal(str(record.get("name") or parts[1]), record["role"], record.get("channel"))

    async def login(self, name: str, password: str, remote: str) -> str:
        """A session token for a person, or AuthError. Failures are limited per user and
        address (``failures_per_minute``, 5), per address (4 times that, across users) and
        per user (10 times, across addresses); beyond, a delay that doubles with each
        further attempt (from a minute to 15), so a flood from one address delays itself,
        not the user elsewhere. An attempt is counted before its password is checked, so
        concurrent attempts get no more checks than that; a success takes its count back.
        """
        user = _sha(name)  # a name can be as long as a request body: the keys hold its hash
        keys = [
            self.keys.tries(f"ip:{remote}"),  # first: a flood refused here makes no other key
            self.keys.tries(f"ua:{user}|{remote}"),
            self.keys.tries(f"u:{user}"),
        ]
        per = self.failures_per_minute
        wait = int(
            await self._call(
                self._count(keys=keys, args=[60, _LONGEST_DELAY_S, per * _PER_ADDRESS, per, per * _PER_USER])
            )
        )
        if wait > 0:
            raise TooManyLogins(f"too many failed logins; retry in {wait} s", wait)
        epoch = int(await self._call(self._r.hget(self.keys.epochs, name)) or 0)  # before the record
        raw = await self._call(self._r.hget(self.keys.users, name))
        record = orjson.loads(raw) if raw else {"salt": "00" * 16, "hash": "", "role": ""}
        digest = await self._scrypt(password, bytes.fromhex(record["salt"]))
        ok = hmac.compare_digest(digest, record["hash"]) and bool(raw)
        if not ok:
            raise AuthError("wrong user name or password")
        await self._call(self._refund(keys=keys))
        session = secrets.token_urlsafe(32)
        now = time.time()
        body = orjson.dumps({"user": name, "epoch": epoch, "created": now, "until": now + self.session_ttl_s})
        await self._call(self._r.set(self.keys.session(_sha(session)), body, ex=self.session_idle_s))
        return session

    async def logout(self, session: str) -> None:
        """End a session (a token is revoked with :meth:`revoke_token`, not here)."""
        await self._call(self._r.delete(self.keys.session(_sha(session))))

    async def session_principal(self, session: str) -> Principal | None:
        """The session's user with the role they have now; None when it ended, was idle
        too long, or the user was replaced, removed or had their sessions revoked."""
        key = self.keys.session(_sha(session))
        raw = await self._call(self._r.get(key))
        if not raw:
            return None
        record = orjson.loads(raw)
        left = float(record.get("until", 0)) - time.time()
        name = record["user"]
        if left <= 0 or "epoch" not in record:  # a session from before generations: ended
            await self._call(self._r.delete(key))
            return None
        user = await self._call(self._r.hget(self.keys.users, name))
        epoch = int(await self._call(self._r.hget(self.keys.epochs, name)) or 0)
        if not user or epoch != record["epoch"]:
            await self._call(self._r.delete(key))
            return None
        await self._call(self._r.expire(key, max(1, int(min(self.session_idle_s, left)))))  # sliding
        return Principal(name, orjson.loads(user)["role"])

    async def _scrypt(self, password: str, salt: bytes) -> str:
        return await asyncio.get_running_loop().run_in_executor(self._hashing, _scrypt, password, salt)

    async def _call(self, awaitable: Any) -> Any:
        return await guarded("auth store", awaitable)
