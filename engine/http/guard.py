"""The check in front of every endpoint but health: credential -> principal -> permission.

401 when the credential is missing or wrong, 403 when it is right but the role may not
do this. With ``auth_required`` off (local development and the test suite's own
servers) every caller is an anonymous administrator.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from engine.errors import StoreError
from engine.http.api import Reply, error
from engine.store.base import Credentials
from engine.store.users import Principal

ANONYMOUS = Principal("anonymous", "risk_admin")
SCRAPER = Principal("prometheus", "viewer")  # the settings' metrics_token: /metrics only
SESSION_COOKIE = "beacon_session"


class Guard:
    def __init__(self, store: Credentials, required: bool, metrics_token: str = "") -> None:
        self.store = store
        self.required = required
        self._metrics_token = metrics_token.encode()

    async def check(
        self, headers: Mapping[str, str], cookies: Mapping[str, str], permission: str
    ) -> Principal | Reply:
        if not self.required:
            return ANONYMOUS
        credential = _bearer(headers) or cookies.get(SESSION_COOKIE, "")
        if permission == "scrape":
            if self._metrics_token and hmac.compare_digest(credential.encode(), self._metrics_token):
                return SCRAPER
            permission = "read"  # a person with read access may look at /metrics too
        if not credential:
            return error(401, "unauthenticated", "send Authorization: Bearer <token>, or log in",
                         **{"WWW-Authenticate": "Bearer"})  # fmt: skip
        try:
            if credential.startswith("bk_"):
                who = await self.store.token_principal(credential)
            else:
                who = await self.store.session_principal(credential)
        except StoreError as exc:
            return error(503, "state_unavailable", str(exc))
        if who is None:
            return error(
                401, "unauthenticated", "the token or session is not valid", **{"WWW-Authenticate": "Bearer"}
            )
        if not who.may(permission):
            return error(403, "forbidden", f"role {who.role} may not {permission}")
        return who


def _bearer(headers: Mapping[str, str]) -> str:
    value = headers.get("Authorization") or headers.get("authorization") or ""
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""
