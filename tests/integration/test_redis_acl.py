"""Redis ACL users (engine/ops/redisacl.py) loaded into a real redis-server: each process
role can do its work and no more, and a refusal is a clear StoreError."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, NoPermissionError

from engine.domain.events import Event
from engine.domain.scoring import BuiltinScorer
from engine.errors import StoreError
from engine.ops.infra import start_embedded
from engine.ops.redisacl import ROLES, acl_file, user_name
from engine.service.decisions import DecisionService
from engine.settings import Settings
from engine.store.feedback import FeedbackStore
from engine.store.keys import AuthKeys
from engine.store.redisio import connect, guarded
from engine.store.snapshots import SnapshotStore
from engine.store.state import StateStore
from engine.store.users import AuthStore
from tests.helpers import signing_keys
from tests.unit.rulefixture import fixture_rules

pytestmark = pytest.mark.integration
PREFIX = "acl"


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A redis-server of its own, started with the generated ACL file."""
    secrets = tmp_path_factory.mktemp("secrets")
    for role in ROLES:
        (secrets / f"redis_{role}_password").write_text(f"{role}-password-{time.time_ns()}\n")
    aclfile = secrets / "users.acl"
    aclfile.write_text(acl_file(PREFIX, secrets))
    emb = start_embedded(Settings(), broker=False, redis_args=("--aclfile", str(aclfile)))
    try:
        yield Settings(redis_url=emb.redis_url, key_prefix=PREFIX, **signing_keys()).replace(
            data_dir=str(secrets)
        )
    finally:
        emb.stop()


def as_role(settings: Settings, role: str) -> Settings:
    password = (Path(settings.data_dir) / f"redis_{role}_password").read_text().strip()
    return settings.replace(redis_username=user_name(role, PREFIX), redis_password=password)


@pytest.fixture
async def worker(acl_redis: Settings) -> AsyncIterator[aioredis.Redis]:
    client = connect(as_role(acl_redis, "worker"))
    yield client
    await client.aclose()


@pytest.fixture
async def trainer(acl_redis: Settings) -> AsyncIterator[aioredis.Redis]:
    client = connect(as_role(acl_redis, "trainer"))
    yield client
    await client.aclose()


async def test_the_worker_runs_its_scripts_on_its_keys(acl_redis: Settings, worker: aioredis.Redis) -> None:
    settings = as_role(acl_redis, "worker").replace(max_event_age_s=40 * 86400.0)
    service = DecisionService(settings, StateStore(worker, settings), fixture_rules(), BuiltinScorer())
    t0 = time.time() - 60
    events = [
        Event(f"e{i}", "c1", ts=t0 + i, channel="atm", type="withdrawal", amount=10.0) for i in range(3)
    ]
    outcomes = await service.decide_batch(events)
    assert len(outcomes) == 3
    view = await service.store.customer_view("c1")
    assert view["windows"]["1h"]["all"]["count"] == 3
    # Logins and sessions are the worker's too.
    auth = AuthStore(worker, PREFIX)
    await auth.add_user("ana", "viewer", "a-long-password-1")
    assert await worker.hexists(AuthKeys.of(PREFIX).users, "ana")


@pytest.mark.parametrize(
    "command",
    [
        ("FLUSHALL",),
        ("FLUSHDB",),
        ("CONFIG", "SET", "maxmemory", "1"),
        ("ACL", "LIST"),
        ("DEBUG", "SLEEP", "0"),
    ],
)
async def test_the_worker_cannot_run_server_commands(
    worker: aioredis.Redis, command: tuple[str, ...]
) -> None:
    with pytest.raises(StoreError) as info:
        await guarded("admin command", worker.execute_command(*command))
    assert info.value.kind == "permission"
    assert "NOPERM" in str(info.value) and "config/redis/users.acl" in str(info.value)


async def test_the_worker_cannot_touch_another_prefix(worker: aioredis.Redis) -> None:
    with pytest.raises(NoPermissionError):
        await worker.set("other:key", "1")


async def test_the_trainer_cannot_write_users_tokens_or_sessions(trainer: aioredis.Redis) -> None:
    keys = AuthKeys.of(PREFIX)
    for key in (keys.users, keys.tokens, keys.session("d1")):
        with pytest.raises(StoreError) as info:
            await guarded("auth write", trainer.hset(key, "mallory", "admin"))
        assert info.value.kind == "permission"
    with pytest.raises(NoPermissionError):
        await trainer.hget(keys.users, "ana")


async def test_the_trainer_keeps_feedback_and_publishes_models(
    acl_redis: Settings, trainer: aioredis.Redis
) -> None:
    settings = as_role(acl_redis, "trainer")
    feedback = FeedbackStore(trainer, PREFIX, 3600)
    await feedback.remember("d1", {"customer_id": "c1", "ts": time.time()}, None, None)
    assert await feedback.recall("d1") is not None
    snapshots = SnapshotStore(trainer, settings)
    version = await snapshots.publish("risk", {"weights": [1, 2]})
    assert version
    with pytest.raises(NoPermissionError):  # a customer's state is not the trainer's
        await trainer.set(f"{PREFIX}:{{c1}}:profile", "{}")


async def test_no_user_or_a_wrong_password_is_refused(acl_redis: Settings) -> None:
    anonymous = connect(acl_redis)
    with pytest.raises(StoreError) as info:
        await guarded("ping", anonymous.ping())
    assert info.value.kind in {"auth", "permission", "response"}
    await anonymous.aclose()
    wrong = connect(acl_redis.replace(redis_username=user_name("worker", PREFIX), redis_password="wrong"))
    with pytest.raises(StoreError) as info:
        await guarded("ping", wrong.ping())
    assert info.value.kind == "auth" and isinstance(info.value.__cause__, AuthenticationError)
    await wrong.aclose()
