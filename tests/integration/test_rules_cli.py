"""`beacon rules ...` as a rule author uses it: validate, test, publish, history,
rollback and show, against real Redis for the commands that store versions."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from engine.cli.main import main
from engine.ops.launcher import isolated
from engine.settings import Settings
from engine.store.redisio import connect
from engine.store.rules import RuleStore
from tests.rulebundles import broken, bundle, version_of, write

pytestmark = pytest.mark.integration

SUBCOMMANDS = ("validate", "test", "publish", "history", "rollback", "show", "shadow", "promote")

CASES = """
tests:
  - name: a login raises the marker alert and is blocked
    event: {type: login, channel: atm}
    expect: {fires: [marker_ok], verdict: block}
"""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["rules", *argv])
    return code, capsys.readouterr().out


def test_every_rules_subcommand_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("", *SUBCOMMANDS):
        with pytest.raises(SystemExit) as exit_info:
            main(["rules", *name.split(), "--help"])
        assert exit_info.value.code == 0
        assert f"usage: beacon rules {name}".strip() in capsys.readouterr().out


def test_validate_accepts_a_good_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "validate", str(write(tmp_path, bundle("ok"))))
    assert code == 0
    assert out.startswith("VALID: ") and "1 risk rules, 0 typologies, 0 offers, 0 test cases" in out
    assert "Without customer state: step_up for any other type." in out  # no section: fail closed


def test_validate_shows_the_shipped_floors_without_state(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "validate", str(Settings().rules_path()))
    assert code == 0
    floors = out.split("Without customer state: ", 1)[1]
    assert "allow for balance_inquiry" in floors and "step_up for any other type." in floors
    assert "transfer" in floors.split("step_up for ", 1)[1]


def test_validate_refuses_a_broken_pack_naming_file_and_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(capsys, "validate", str(write(tmp_path, broken("oops"))))
    assert code == 1
    assert "NOT VALID" in out
    assert "risk.yaml: rule marker_oops: severity must be one of low, medium, high, critical" in out


def test_validate_names_the_file_of_a_rule_failing_the_dry_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = bundle("ok")
    files["risk.yaml"] = files["risk.yaml"].replace('event.type == "login"', "event.amount * 2 > 10.0")
    code, out = run(capsys, "validate", str(write(tmp_path, files)))
    assert code == 1 and "rule marker_ok" in out
    assert "risk.yaml: rule marker_ok" in out


def test_test_prints_each_failing_case_and_a_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = bundle("ok")
    files["risk.yaml"] += CASES
    code, out = run(capsys, "test", str(write(tmp_path, files)))
    assert code == 1
    assert "FAILED  risk.yaml: a login raises the marker alert and is blocked" in out
    assert "    - expected verdict block, got allow" in out
    assert "1 test cases: 0 passed, 1 failed" in out
    files["risk.yaml"] = files["risk.yaml"].replace("verdict: block", "verdict: allow")
    code, out = run(capsys, "test", str(write(tmp_path, files)))
    assert code == 0 and "1 test cases: 1 passed, 0 failed" in out


@pytest.fixture
def redis_args(infra: Settings) -> list[str]:
    s = isolated(infra)
    return ["--redis-url", s.redis_url, "--key-prefix", s.key_prefix]


def test_publish_refuses_bad_packs_and_stores_good_ones(
    redis_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(capsys, "publish", str(write(tmp_path / "bad", broken("bad"))), *redis_args)
    assert code == 1 and "NOT PUBLISHED" in out and "risk.yaml: rule marker_bad" in out
    failing = bundle("ok")
    failing["risk.yaml"] += CASES
    code, out = run(capsys, "publish", str(write(tmp_path / "failing", failing)), *redis_args)
    assert code == 1 and "FAILED  risk.yaml" in out and "NOT PUBLISHED" in out
    assert run(capsys, "show", *redis_args)[1].startswith("no rules published yet")

    good = write(tmp_path / "good", bundle("one"))
    code, out = run(capsys, "publish", str(good), "--note", "first go", "--author", "ana", *redis_args)
    v1 = version_of(1, bundle("one"))
    assert code == 0 and f"PUBLISHED {v1}" in out and "Workers switch to it within about 2 seconds" in out
    code, out = run(capsys, "publish", str(good), *redis_args)
    assert code == 0 and f"identical to the current version {v1}; nothing changed" in out
    code, out = run(capsys, "show", *redis_args)
    assert f"current version: {v1}" in out and "risk.yaml" in out and "offers.yaml" in out


def test_history_and_rollback(
    redis_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    v1, v2 = version_of(1, bundle("one")), version_of(2, bundle("two"))
    assert run(capsys, "publish", str(write(tmp_path / "one", bundle("one"))), *redis_args)[0] == 0
    assert run(capsys, "publish", str(write(tmp_path / "two", bundle("two"))), *redis_args)[0] == 0
    code, out = run(capsys, "rollback", v1, "--note", "two was wrong", "--author", "ana", *redis_args)
    assert code == 0 and f"ROLLED BACK: {v1} is the current version again" in out
    code, out = run(capsys, "rollback", v1, *redis_args)
    assert code == 0 and "already the current version; nothing changed" in out
    code, out = run(capsys, "rollback", "v9-0123456789ab", *redis_args)
    assert code == 1 and "NOT ROLLED BACK: version v9-0123456789ab is not stored" in out
    code, out = run(capsys, "history", *redis_args)
    rows = [line for line in out.splitlines() if re.match(r"^[* ] v\d", line)]
    assert code == 0 and f"current version: {v1}" in out and len(rows) == 3
    assert rows[0].startswith(f"* {v1}") and "rollback  ana" in rows[0] and rows[0].endswith("two was wrong")
    assert rows[1].startswith(f"  {v2}") and " publish " in rows[1]
    assert rows[2].startswith(f"  {v1}") and " publish " in rows[2]  # only the newest entry is marked
    out = run(capsys, "history", "--limit", "1", *redis_args)[1]
    assert [line for line in out.splitlines() if re.match(r"^[* ] v\d", line)] == rows[:1]


async def test_rollback_refuses_a_stored_version_that_no_longer_validates(
    infra: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s = isolated(infra)
    client = connect(s)
    try:
        store = RuleStore(client, s.key_prefix)
        bad = await store.publish(broken("bad"), "mallory")  # bypassing `beacon rules publish`
        good = await store.publish(bundle("good"), "ana")
    finally:
        await client.aclose()
    args = ["rollback", bad, "--redis-url", s.redis_url, "--key-prefix", s.key_prefix]
    code, out = await asyncio.to_thread(run, capsys, *args)  # the CLI runs its own event loop
    assert code == 1 and f"NOT ROLLED BACK: {bad} no longer passes validation" in out
    assert "risk.yaml: rule marker_bad" in out
    code, out = await asyncio.to_thread(run, capsys, "show", *args[2:])
    assert f"current version: {good}" in out


def test_commands_that_need_redis_say_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "history", "--redis-url", ""]) == 2
    assert "no Redis configured" in capsys.readouterr().err
