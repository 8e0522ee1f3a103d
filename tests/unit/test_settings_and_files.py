"""Settings precedence and secrecy; reading event and profile files."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.cli.commands import load_profiles
from engine.cli.files import FileFormatError, read_events
from engine.errors import ConfigError
from engine.settings import Settings


def test_env_overrides_file_and_secrets_are_masked(tmp_path: Path) -> None:
    cfg = tmp_path / "beacon.toml"
    cfg.write_text('[beacon]\nhttp_port = 7001\nredis_url = "redis://:hunter2@db:6379/0"\n')
    s = Settings.build(env={"BEACON_HTTP_PORT": "7002"}, config_file=cfg)
    assert s.http_port == 7002
    assert "hunter2" not in repr(s) and s.redacted()["redis_url"] == "***"


@pytest.mark.parametrize(
    "env",
    [{"BEACON_HTTP_PORT": "eighty"}, {"BEACON_BATCH_MAX": "0"}, {"BEACON_RISK_BLOCK": "0.1"}],
)
def test_bad_settings_are_refused(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        Settings.build(env=env)


def test_unknown_setting_in_file_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "b.toml"
    cfg.write_text("http_prot = 1\n")
    with pytest.raises(ConfigError, match="http_prot"):
        Settings.build(env={}, config_file=cfg)


def test_jsonl_with_a_broken_line_names_the_line(tmp_path: Path) -> None:
    f = tmp_path / "e.jsonl"
    f.write_text('{"event_id": "a"}\n\n{"event_id": \n')
    with pytest.raises(FileFormatError, match=r"e\.jsonl:3"):
        list(read_events(f))


def test_profiles_csv_reports_bad_rows(tmp_path: Path) -> None:
    f = tmp_path / "p.csv"
    f.write_text(
        "customer_id,segment,products,tenure_months\nC1,mass,current;savings,12\n,mass,,\nC3,x,,many\n"
    )
    good, bad = load_profiles(f)
    assert good == [("C1", {"segment": "mass", "products": ["current", "savings"], "tenure_months": 12})]
    assert [line for line, _ in bad] == [3, 4]


@pytest.mark.parametrize("word", ["required", "enabled", "Y", "ture", "", "2"])
def test_a_boolean_setting_refuses_anything_but_a_boolean_word(word: str) -> None:
    """Issue 17, item 3: BEACON_AUTH_REQUIRED read anything but 1/true/yes/on as "off",
    so "required" or a typo made every caller an anonymous risk_admin."""
    with pytest.raises(ConfigError, match=r"setting auth_required: .* is not a boolean"):
        Settings.build(env={"BEACON_AUTH_REQUIRED": word})


@pytest.mark.parametrize(("word", "value"), [("TRUE", True), (" on ", True), ("0", False), ("No", False)])
def test_boolean_words_read_both_ways(word: str, value: bool) -> None:
    assert Settings.build(env={"BEACON_BULK_IDEMPOTENCE": word}).bulk_idempotence is value


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "worker.bank.internal"])
def test_a_worker_off_loopback_needs_the_record_signing_key(host: str) -> None:
    """Issue 17, finding 1: without a key a worker neither signs nor checks the records on
    risk.alerts, feedback and decisions.audit, so it must not run where others reach it."""
    with pytest.raises(ConfigError, match="record_signing_key is not set while the API listens on"):
        Settings.build(env={"BEACON_HTTP_HOST": host})
    Settings.build(env={"BEACON_HTTP_HOST": host, "BEACON_RECORD_SIGNING_KEY": "k" * 64})
    Settings.build(env={"BEACON_HTTP_HOST": host, "BEACON_RECORD_VERIFY_KEYS": "k1=" + "k" * 64})
    Settings.build(env={"BEACON_HTTP_HOST": "127.0.0.1"})  # development: nothing reaches it


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::", "worker.bank.internal"])
def test_auth_off_is_refused_on_a_non_loopback_bind(host: str) -> None:
    with pytest.raises(ConfigError, match="auth_required is off while the API listens on"):
        Settings.build(env={"BEACON_AUTH_REQUIRED": "false", "BEACON_HTTP_HOST": host})
    for loopback in ("127.0.0.1", "::1", "localhost"):
        Settings.build(env={"BEACON_AUTH_REQUIRED": "false", "BEACON_HTTP_HOST": loopback})
