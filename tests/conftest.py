"""Session fixtures: one embedded Redis and one embedded broker for the whole run,
on free ports (unless BEACON_REDIS_URL / BEACON_KAFKA_BOOTSTRAP point elsewhere)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.ops.infra import start_embedded, wait_kafka
from engine.settings import Settings


@pytest.fixture(scope="session")
def infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    base = Settings.build()
    logs = tmp_path_factory.mktemp("infra-logs")
    emb = start_embedded(base, log_dir=str(logs))
    try:
        settings = emb.settings_for(base)
        wait_kafka(settings)
        yield settings
    finally:
        emb.stop()


@pytest.fixture
def logdir(tmp_path: Path) -> Path:
    return tmp_path
