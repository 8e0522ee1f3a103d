"""Reading ``decisions.audit`` back: from the topic over a period, or from a JSON Lines file
of its records (an export, or what ``kcat -C -t decisions.audit -e`` printed).

Every decision's record holds the event as audited, its features, scores, the profile
fields the rules read, and the explanation (engine/domain/decision.py ``audit_view``):
what reports and backtests need. The topic's records are verified like the trainer
verifies them (engine/service/topicread.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson

from engine.errors import BeaconError
from engine.service.topicread import ReadCounts, read_topic
from engine.settings import Settings


def read_audit_file(path: Path | str) -> Iterator[dict[str, Any]]:
    """The audit records of a JSON Lines file, one per non-blank line. A line may be the
    record itself or a consumed message ``{"key", "headers", "value"}`` (the contract's
    form, engine/contract/topics/): its ``value`` is taken.

    >>> import tempfile, os
    >>> with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as fh:
    ...     _ = fh.write('{"decision_id": "d1"}\\n\\n')
    ...     _ = fh.write('{"key": "C1", "headers": {}, "value": {"decision_id": "d2"}}\\n')
    >>> [r["decision_id"] for r in read_audit_file(fh.name)]
    ['d1', 'd2']
    >>> os.unlink(fh.name)
    """
    try:
        with Path(path).open("rb") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    raise BeaconError(f"{path}:{n}: not JSON ({exc})") from exc
                if (
                    isinstance(record, dict)
                    and "decision_id" not in record
                    and isinstance(record.get("value"), dict)
                ):
                    record = record["value"]
                if not isinstance(record, dict):
                    raise BeaconError(f"{path}:{n}: not a JSON object")
                yield record
    except OSError as exc:
        raise BeaconError(f"cannot read {path}: {exc}") from exc


async def read_audit(
    settings: Settings, since: float, until: float | None, counts: ReadCounts | None = None
) -> AsyncIterator[dict[str, Any]]:
    """The records of ``decisions.audit`` written in [since, until) (epoch seconds; the
    records' timestamps), up to the end of the topic as it was when the read began."""
    async for record in read_topic(settings, "decisions.audit", since, until, counts):
        yield record
