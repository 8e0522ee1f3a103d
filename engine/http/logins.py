"""Console logins over HTTP: at most so many password checks at once per worker, and the
login request itself (values in, a Reply out; the route is in agents/web.py)."""

from __future__ import annotations

import orjson

from engine.errors import StoreError
from engine.http.api import Reply, error
from engine.store.users import AuthError, AuthStore, TooManyLogins


class LoginGate:
    """At most ``limit`` logins in progress on this worker (each checks a password with
    scrypt); beyond, 429 ``too_many_logins`` at once rather than a queue without bound."""

    def __init__(self, limit: int) -> None:
        self.limit, self.in_progress = max(1, limit), 0

    def enter(self) -> bool:
        if self.in_progress >= self.limit:
            return False
        self.in_progress += 1
        return True

    def leave(self) -> None:
        self.in_progress -= 1

    def busy(self) -> Reply:
        message = "this worker is checking as many logins as it may at once; retry in 1 s"
        return error(429, "too_many_logins", message, **{"Retry-After": "1"})


async def login(auth: AuthStore, body: bytes, remote: str) -> Reply:
    try:
        data = orjson.loads(body or b"{}")
        name, password = str(data["user"]), str(data["password"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return error(400, "invalid_value", 'send {"user": ..., "password": ...}')
    try:
        session = await auth.login(name, password, remote)
    except TooManyLogins as exc:
        return error(429, "too_many_logins", str(exc), **{"Retry-After": str(exc.wait_s)})
    except AuthError:
        return error(401, "unauthenticated", "wrong user name or password")
    except StoreError as exc:
        return error(503, "state_unavailable", str(exc))
    return Reply(200, orjson.dumps({"session": session, "user": name}))
