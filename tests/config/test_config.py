"""The example configuration stays loadable and names only real settings."""

from __future__ import annotations

from pathlib import Path

from engine.settings import Settings

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "beacon.example.toml"


def test_example_config_loads() -> None:
    s = Settings.build(env={}, config_file=EXAMPLE)
    assert s.http_host == "0.0.0.0" and s.partitions == 12 and "atm" in s.channels
