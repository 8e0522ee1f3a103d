"""The example configuration stays loadable and names only real settings."""

from __future__ import annotations

from pathlib import Path

from engine.settings import Settings

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "beacon.example.toml"


def test_example_config_loads() -> None:
    # Secrets come from the environment or files, never the TOML: a worker listening on
    # 0.0.0.0 needs the record signing key (engine/settingscheck.py).
    s = Settings.build(env={"BEACON_RECORD_SIGNING_KEY": "k" * 64}, config_file=EXAMPLE)
    assert s.http_host == "0.0.0.0" and s.partitions == 12 and "atm" in s.channels
