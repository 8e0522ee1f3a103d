"""What ``beacon demo`` sets up besides the servers, so a new user can try every part:
console logins for a risk officer and an analyst, and a candidate rule version running in
shadow beside the live one (issue 18: its differences show in ``decisions.shadow``, the
``beacon_shadow_*`` metrics, ``GET /v1/rules`` and the consoles)."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from engine.cli.common import with_redis
from engine.ops.launcher import settings_env
from engine.settings import Settings

LOGINS = (("officer", "risk_officer"), ("analyst", "analyst"))
# The demo's candidate: cash withdrawals flagged at 4x the customer's 30-day average
# instead of 5x. The live pack's own tests still pass (a publish runs them).
CANDIDATE_EDIT = (
    "event.amount >= 300.0 && state.amount_ratio_30d >= 5.0",
    "event.amount >= 300.0 && state.amount_ratio_30d >= 4.0",
)
CANDIDATE_NOTE = "demo candidate: withdrawal_above_baseline at 4x the 30-day average (live: 5x)"


async def console_logins(settings: Settings) -> dict[str, str]:
    """A login per demo role, each with a password made up for this run: {user: password}."""
    from engine.store.users import AuthStore

    passwords = {user: secrets.token_urlsafe(9) for user, _ in LOGINS}

    async def add(client: Any) -> None:
        store = AuthStore(client, settings.key_prefix)
        for user, role in LOGINS:
            await store.add_user(user, role, passwords[user])

    await with_redis(settings, add)
    return passwords


def candidate_pack(settings: Settings, folder: Path) -> Path:
    """A copy of the live packs with the demo's one change, in ``folder``."""
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(settings.rules_path(), folder, ignore=shutil.ignore_patterns("*.md"))
    risk = folder / "risk.yaml"
    text = risk.read_text()
    if CANDIDATE_EDIT[0] not in text:
        raise ValueError(f"{risk}: the demo's candidate edit no longer applies (rule changed?)")
    risk.write_text(text.replace(*CANDIDATE_EDIT))
    return folder


def publish_shadow(settings: Settings, folder: Path) -> str:
    """``beacon rules publish --shadow`` the candidate, as an analyst would; its output."""
    argv = [
        sys.executable,
        "-m",
        "engine.cli",
        "rules",
        "publish",
        "--shadow",
        str(folder),
        "--note",
        CANDIDATE_NOTE,
    ]
    done = subprocess.run(argv, env=settings_env(settings), capture_output=True, text=True, timeout=120)
    out = (done.stdout + done.stderr).strip()
    if done.returncode != 0:
        raise RuntimeError(f"publishing the demo's shadow candidate failed:\n{out}")
    return out
