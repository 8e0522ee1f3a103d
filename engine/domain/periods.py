"""Points in time as people type them for a period (reports, backtests, exports)."""

from __future__ import annotations

from datetime import datetime

from engine.errors import EventError


def parse_time(value: str, name: str) -> float:
    """Epoch seconds, or ISO 8601 with a time zone (a date alone is midnight UTC).

    >>> parse_time("1795428000", "since"), parse_time("2026-11-23T10:00:00Z", "since")
    (1795428000.0, 1795428000.0)
    >>> parse_time("2026-11-23", "until"), parse_time("2026-11-23T01:00:00+01:00", "until")
    (1795392000.0, 1795392000.0)
    >>> parse_time("yesterday", "since")
    Traceback (most recent call last):
    ...
    engine.errors.EventError: since must be epoch seconds or ISO 8601 (2026-11-23T10:00:00Z)
    """
    try:
        return float(value)
    except ValueError:
        pass
    try:
        text = value.strip().replace("Z", "+00:00")
        parsed = datetime.fromisoformat(text if "T" in text else text + "T00:00:00+00:00")
    except ValueError as exc:
        raise EventError("invalid_value", f"{name} must be epoch seconds or ISO 8601 (2026-11-23T10:00:00Z)",
                         name) from exc  # fmt: skip
    if parsed.tzinfo is None:
        raise EventError("invalid_value", f"{name} must carry a time zone (e.g. Z)", name)
    return parsed.timestamp()
