"""Redis ACL file generation, secret files and Kafka client credentials (issue 17, finding 1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.app import broker_credentials
from engine.errors import ConfigError
from engine.ops.kafkaauth import kafka_auth
from engine.ops.redisacl import ROLES, acl_file, main, password_hash
from engine.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_acl_file_is_the_generated_one() -> None:
    committed = (ROOT / "config" / "redis" / "users.acl").read_text()
    assert committed == acl_file("beacon"), (
        "regenerate: python -m engine.ops.redisacl --out config/redis/users.acl"
    )


def test_roles_have_least_privilege() -> None:
    lines = {line.split()[1]: line for line in acl_file("beacon").splitlines()}
    assert "off" in lines["default"].split()
    for role in ("worker", "trainer", "admin"):
        words = lines[f"beacon-{role}"].split()
        assert "-@dangerous" in words and "+flushall" not in words and "+config" not in words
    trainer = lines["beacon-trainer"].split()
    assert [w for w in trainer if w.startswith("~")] == ["~beacon:fb:*", "~beacon:models:*"]
    assert "-@all" in lines["beacon-replica"].split()


def test_secret_files_become_sha256_hashes(tmp_path: Path) -> None:
    for role in ROLES:
        (tmp_path / f"redis_{role}_password").write_text(f"{role}-secret\n")
    text = acl_file("beacon", tmp_path)
    assert f"#{password_hash('worker-secret')}" in text and "worker-secret" not in text
    (tmp_path / "redis_admin_password").write_text("")
    with pytest.raises(ConfigError, match="empty"):
        acl_file("beacon", tmp_path)
    assert main(["--secrets-dir", str(tmp_path / "missing")]) == 2


def test_secrets_from_files(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-a-file\n")
    env = {"BEACON_REDIS_USERNAME": "beacon-worker", "BEACON_REDIS_PASSWORD_FILE": str(secret)}
    settings = Settings.build(env=env)
    assert settings.redis_password == "from-a-file" and "from-a-file" not in repr(settings)
    assert settings.redacted()["redis_password"] == "***"
    # The variable itself wins over its file; a missing file is a clear error.
    assert Settings.build(env={**env, "BEACON_REDIS_PASSWORD": "direct"}).redis_password == "direct"
    with pytest.raises(ConfigError, match="BEACON_KAFKA_SASL_PASSWORD_FILE"):
        Settings.build(env={"BEACON_KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "nope")})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kafka_security_protocol": "SSL"}, "kafka_security_protocol"),
        ({"kafka_sasl_mechanism": "GSSAPI"}, "kafka_sasl_mechanism"),
        ({"kafka_security_protocol": "SASL_PLAINTEXT"}, "kafka_sasl_username"),
        ({"redis_password": "pw"}, "redis_username"),
    ],
)
def test_credentials_that_cannot_work_are_refused(changes: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.build(env={}, **changes)


def test_kafka_clients_share_the_sasl_settings() -> None:
    assert kafka_auth(Settings()) == {} and broker_credentials(Settings()) is None
    s = Settings(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_username="beacon-worker",
        kafka_sasl_password="pw",
    )
    assert kafka_auth(s)["sasl_plain_username"] == "beacon-worker"
    creds = broker_credentials(s)
    assert (
        creds is not None and creds.username == "beacon-worker" and creds.mechanism.value == "SCRAM-SHA-512"
    )


def test_a_refusal_by_the_acl_is_a_permission_store_error() -> None:
    """Before issue 17 a NOPERM was kind ``response`` and a wrong password ``connection``
    (AuthenticationError is a ConnectionError): an SRE could not tell them from an outage."""
    from redis.exceptions import AuthenticationError, NoPermissionError

    from engine.errors import StoreError
    from engine.store.redisio import kind_of, redis_errors

    assert (
        kind_of(NoPermissionError("this user has no permissions to run the 'flushall' command"))
        == "permission"
    )
    assert kind_of(AuthenticationError("invalid username-password pair or user is disabled.")) == "auth"
    with pytest.raises(StoreError) as info, redis_errors("rules publish"):
        raise NoPermissionError("this user has no permissions to access one of the keys used as arguments")
    assert info.value.kind == "permission" and "redis_username" in str(info.value)
