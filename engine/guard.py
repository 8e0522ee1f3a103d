"""The check in front of every endpoint but health: credential -> principal -> permission.

401 when the credential is missing or wrong, 403 when it is right but the role may not
do this. With ``auth_required`` off (local development and the test suite's own
servers) every caller is an anonymous administrator.
"""

from __future__ import annotations

from collections.abc import Mapping

from engine.api import Reply, error
from engine.auth import AuthStore, Principal
from engine.errors import StoreError

ANONYMOUS = Principal("anonymous", "risk_admin")
SESSION_COOKIE = "beacon_session"


class Guard:
    def __init__(self, store: AuthStore, required: bool) -> None:
        self.store = store
        self.required = required

    async def check(
        self, headers: Mapping[str, str], cookies: Mapping[str, str], permission: str
    ) -> Principal | Reply:
        if not self.required:
            return ANONYMOUS
        credential = _bearer(headers) or cookies.get(SESSION_COOKIE, "")
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
