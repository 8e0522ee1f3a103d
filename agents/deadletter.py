"""Dead-letter copies: the record as it came, and why it was refused, in headers."""

from __future__ import annotations

from typing import Any

from agents.bulk import BulkProducer
from engine.errors import EventError


async def send_dead_letter(bulk: BulkProducer, topic: str, message: Any, raw: bytes, err: EventError) -> Any:
    """Queue the copy of ``message`` on ``topic``; returns its delivery future (acknowledge
    the input only once it resolves)."""
    headers = [
        ("beacon-error-code", err.code.encode()),
        ("beacon-error-field", (err.field or "").encode()),
        ("beacon-error-message", err.message.encode()[:500]),
        ("beacon-source", f"{message.topic}/{message.partition}/{message.offset}".encode()),
    ]
    return await bulk.send(topic, message.key, raw, headers)
