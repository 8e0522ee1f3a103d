"""Signed rule bundles on a real worker and Redis (issue 17, finding 1: "rule bundles signed
like model snapshots").

Before: anyone who could write Redis could publish a rules bundle (one Lua call, no
credential beyond Redis) and every worker ran it within seconds: switch a fraud rule off,
or block every customer. Now a worker holding the deployment's public keys runs only a
bundle signed by the publisher's private key (``beacon rules publish`` with
``BEACON_SIGNING_KEY_FILE``), or its own packs (the seed it publishes from its image).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from engine.settings import Settings
from engine.store.redisio import connect
from engine.store.rules import RuleStore
from engine.store.signkeys import signer
from tests.helpers import isolated, running_worker, signing_keys
from tests.rulebundles import bundle, version_of, write

pytestmark = pytest.mark.integration


async def _failures_reach(url: str, n: int) -> str:
    deadline, text = time.monotonic() + 15, ""
    while f"beacon_rules_reload_failures_total {n}.0" not in text and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        text = httpx.get(f"{url}/metrics").text
    return text


async def test_a_worker_runs_only_signed_bundles_or_its_own_packs(infra: Settings, tmp_path: Path) -> None:
    s = isolated(infra, rules_dir=str(write(tmp_path / "rules", bundle("own"))), rules_poll_s=0.3)
    own = version_of(1, bundle("own"))
    with running_worker(s, tmp_path / "logs") as worker:
        client = connect(s)
        try:
            unsigned = await RuleStore(client, s.key_prefix).publish(bundle("forged"), "mallory")
            assert "beacon_rules_reload_failures_total 1.0" in await _failures_reach(worker.url, 1)
            stranger = signer(s.replace(**signing_keys()))  # a key pair the workers do not trust
            wrong_key = await RuleStore(client, s.key_prefix, signer=stranger).publish(bundle("forged2"), "m")
            assert "beacon_rules_reload_failures_total 2.0" in await _failures_reach(worker.url, 2)
            rules = httpx.get(f"{worker.url}/metrics").text
            assert f'rules="{own}"' in rules  # the worker's own packs stayed in force
            signed = await RuleStore(client, s.key_prefix, signer=signer(s)).publish(bundle("real"), "ana")
            deadline = time.monotonic() + 15
            while f'rules="{signed}"' not in httpx.get(f"{worker.url}/metrics").text:
                assert time.monotonic() < deadline, "the signed bundle was not taken up"
                await asyncio.sleep(0.1)
        finally:
            await client.aclose()
        log = worker.log()
    assert f"version {unsigned} refused" in log and "not signed" in log
    assert f"version {wrong_key} refused" in log and "signature is refused" in log
