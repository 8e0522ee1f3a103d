"""The trainer's model-quality report as people read it (``beacon models report``, the
replay's summary): what the trainer last wrote, once its label counts settle."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from engine.settings import Settings
from engine.store.feedback import FeedbackStore


async def quality_report(settings: Settings, client: Any, settle_s: float = 0.0) -> str | None:
    """The trainer's quality report as text, None before it has written one.

    With ``settle_s``, waits (at most that long) for its label counts to stop moving."""
    from models.report import render_full

    store = FeedbackStore(client, settings.key_prefix, settings.feedback_ttl_s)
    deadline, last, stable = time.monotonic() + settle_s, None, 0
    while time.monotonic() < deadline and stable < 3:
        await asyncio.sleep(max(settings.snapshot_interval_s, 1.0))
        report = await store.load_quality()
        counts = {k: v.get("labels") for k, v in report.items()}
        stable = stable + 1 if counts == last and counts else 0
        last = counts
    summaries = await store.load_quality()
    return render_full(summaries) if summaries else None
