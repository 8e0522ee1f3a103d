"""Customer profiles on a real worker and Redis (issue 17, finding 2).

Before: any channel token replaced any customer's profile whole, with no record of it;
a 252-deep profile was stored and made the customer's page answer 500; ``timezone:
"Europe"`` was stored, silently turning every ``local_hour`` rule off for the customer.
Now only the ``crm`` role writes profiles (PUT replaces, PATCH merges: RFC 7396), in one
compare-and-set step with a history entry (who, when, what changed); known fields follow
a schema and every profile a depth and size limit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import orjson
import pytest

from engine.ops.launcher import WorkerProcess, isolated, running_worker
from engine.settings import Settings
from engine.store import keys
from engine.store.redisio import connect
from engine.store.users import AuthStore

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def worker(infra: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    s = isolated(infra, auth_required=True, profile_history_max=3)

    async def tokens() -> dict[str, str]:
        client = connect(s)
        try:
            store = AuthStore(client, s.key_prefix, s.session_ttl_s)
            return {
                "atm": await store.add_token("channel", "atm", channel="atm"),
                "crm": await store.add_token("crm", "crm-system"),
                "viewer": await store.add_token("viewer", "auditor"),
            }
        finally:
            await client.aclose()

    made = asyncio.run(tokens())
    with running_worker(s, tmp_path_factory.mktemp("profiles")) as w:
        w.tokens = made  # type: ignore[attr-defined]
        yield w


def _client(worker: WorkerProcess, role: str) -> httpx.Client:
    token = worker.tokens[role]  # type: ignore[attr-defined]
    return httpx.Client(base_url=worker.url, timeout=5, headers={"Authorization": f"Bearer {token}"})


def _code(r: httpx.Response) -> str:
    return str(r.json()["error"]["code"])


def test_a_channel_token_cannot_write_a_profile(worker: WorkerProcess) -> None:
    with _client(worker, "atm") as atm:
        r = atm.put("/v1/customers/P1/profile", json={"segment": "mass"})  # before: 200
        patch = atm.patch("/v1/customers/P1/profile", json={"segment": "mass"})
    assert (r.status_code, _code(r)) == (403, "forbidden")
    assert (patch.status_code, _code(patch)) == (403, "forbidden")


def test_patch_merges_and_every_change_is_in_the_history(worker: WorkerProcess) -> None:
    with _client(worker, "crm") as crm:
        put = crm.put(
            "/v1/customers/P2/profile", json={"segment": "mass", "products": ["current"], "name": "Ann"}
        )
        assert put.status_code == 200, put.text
        patch = crm.patch("/v1/customers/P2/profile", json={"segment": "affluent", "name": None})
        assert patch.status_code == 200, patch.text
        assert patch.json()["profile"] == {"segment": "affluent", "products": ["current"]}
        for i in range(3):  # the history keeps profile_history_max (3 here) entries
            crm.patch("/v1/customers/P2/profile", json={"tenure_months": i})
    with _client(worker, "viewer") as viewer:
        history = viewer.get("/v1/customers/P2/profile/history", params={"limit": 3}).json()["history"]
        refused = viewer.patch("/v1/customers/P2/profile", json={"segment": "mass"})
    assert [e["changes"] for e in history] == [
        {"tenure_months": [1, 2]},
        {"tenure_months": [0, 1]},
        {"tenure_months": [None, 0]},
    ]
    assert {e["by"] for e in history} == {"crm-system"} and {e["op"] for e in history} == {"patch"}
    assert refused.status_code == 403


@pytest.mark.parametrize(
    ("profile", "field"),
    [
        ({"timezone": "Europe"}, "timezone"),  # before: stored, and local_hour rules went quiet
        ({"kyc_risk": "sort of"}, "kyc_risk"),
        ({"home_geo": {"lat": 95, "lon": 0}}, "home_geo.lat"),
        ({"products": "current"}, "products"),
    ],
)
def test_known_fields_follow_the_schema(
    worker: WorkerProcess, profile: dict[str, object], field: str
) -> None:
    with _client(worker, "crm") as crm:
        r = crm.put("/v1/customers/P3/profile", json=profile)
    assert (r.status_code, _code(r), r.json()["error"]["field"]) == (400, "invalid_value", field)


def test_a_deep_profile_is_refused_and_one_stored_before_still_shows(worker: WorkerProcess) -> None:
    deep: object = "bottom"
    for _ in range(252):
        deep = {"x": deep}
    with _client(worker, "crm") as crm:
        r = crm.put("/v1/customers/P4/profile", content=orjson.dumps({"notes": deep}))
    assert (r.status_code, _code(r)) == (400, "too_deep")  # before: 200, stored
    s = worker.settings

    async def store_directly() -> None:  # as a profile written before the limit would be
        client = connect(s)
        try:
            await client.set(keys.customer(s.key_prefix, "P5") + keys.PROFILE, orjson.dumps({"notes": deep}))
        finally:
            await client.aclose()

    asyncio.run(store_directly())
    with _client(worker, "viewer") as viewer:
        page = viewer.get("/v1/customers/P5")  # before: 500
    assert page.status_code == 200, page.text
    assert "cut" in orjson.dumps(page.json()["profile"]).decode()
