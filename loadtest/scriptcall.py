"""CPU per script call: the Redis client's command path against the decision path's own
connection (``engine.store.scriptline``), same script, same arguments, same embedded Redis.

``python -m loadtest.scriptcall [--calls 5000] [--rounds 3]`` prints one line per round.
CPU is this process's (``time.process_time``): what a worker pays per call.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable

from engine.ops.infra import start_embedded
from engine.settings import Settings
from engine.store.redisio import connect
from engine.store.scriptline import ScriptLine

# Sized like a batch of one: a customer key, the script config and one event.
_KEYS = ["beacon:{c1}"]
_ARGS = [b"c" * 300, b"e" * 600]


async def _cpu_us(calls: int, one: Callable[[], Awaitable[object]]) -> float:
    c0 = time.process_time()
    for _ in range(calls):
        await one()
    return 1e6 * (time.process_time() - c0) / calls


async def measure(settings: Settings, calls: int, rounds: int) -> list[tuple[float, float]]:
    client = connect(settings)
    script = client.register_script("return ARGV[1]")
    line = ScriptLine(client)
    out = []
    try:
        await script(keys=_KEYS, args=_ARGS)
        await line.run(script, _KEYS, _ARGS)
        for _ in range(rounds):
            via_client = await _cpu_us(calls, lambda: script(keys=_KEYS, args=_ARGS))
            via_line = await _cpu_us(calls, lambda: line.run(script, _KEYS, _ARGS))
            out.append((via_client, via_line))
    finally:
        await line.close()
        await client.aclose()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    base = Settings.build(env={"BEACON_KAFKA_BOOTSTRAP": "unused:9092"})  # Redis only
    emb = start_embedded(base)
    try:
        rows = asyncio.run(measure(emb.settings_for(base), args.calls, args.rounds))
    finally:
        emb.stop()
    for via_client, via_line in rows:
        print(f"EVALSHA CPU per call: client {via_client:.1f} us, script line {via_line:.1f} us "
              f"({via_client / via_line:.2f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
