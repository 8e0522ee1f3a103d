"""The desk waits for Redis while it is unavailable and gives up on a record Redis keeps
refusing (agents/desk.py): pure logic with a stand-in desk."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from agents.desk import _raise_until_recorded, unavailable
from engine.errors import EventError, StoreError


@pytest.mark.parametrize(
    ("exc", "wait"),
    [
        (StoreError("alert raise failed: Connection refused", "connection"), True),
        (StoreError("alert raise failed: Timeout reading", "timeout"), True),
        (
            StoreError(
                "alert raise failed: OOM command not allowed when used memory > 'maxmemory'", "response"
            ),
            True,
        ),
        (
            StoreError(
                "alert raise failed: READONLY You can't write against a read only replica.", "response"
            ),
            True,
        ),
        (
            StoreError(
                "alert raise failed: ERR user_script:1: attempt to concatenate a nil value", "response"
            ),
            False,
        ),
    ],
)
def test_what_is_worth_waiting_for(exc: StoreError, wait: bool) -> None:
    assert unavailable(exc) is wait


class FlakyDesk:
    def __init__(self, failures: list[StoreError]) -> None:
        self.failures, self.calls = failures, 0

    async def raise_alert(self, body: Any, now_ms: int) -> tuple[str, str]:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "a1", "raised"


def test_a_script_error_is_the_records_after_three_attempts() -> None:
    desk = FlakyDesk([StoreError("x failed: ERR user_script:1: boom", "response")] * 5)
    with pytest.raises(EventError) as caught:
        asyncio.run(_raise_until_recorded(SimpleNamespace(desk=desk), {"alert_id": "a1"}))  # type: ignore[arg-type]
    assert caught.value.code == "alert_not_recorded" and desk.calls == 3


def test_redis_unavailable_is_waited_out() -> None:
    desk = FlakyDesk([StoreError("x failed: gone", "connection")] * 4)
    got = asyncio.run(_raise_until_recorded(SimpleNamespace(desk=desk), {"alert_id": "a1"}))  # type: ignore[arg-type]
    assert got == ("a1", "raised") and desk.calls == 5
