"""Logging set-up: one JSON object a line (for log shippers) or plain text (for people).

Records carry correlation ids as fields when the call site passes them
(``log.warning(..., extra=ids(event))``): ``event_id``, ``decision_id``, ``alert_id``,
``customer_id`` and ``channel``. Nothing else about a customer goes into a log record:
amounts, devices, places and profile data stay out (the decision audit topic has them).

>>> import io
>>> out = io.StringIO()
>>> logger = logging.getLogger("beacon.doctest")
>>> handler = logging.StreamHandler(out); handler.setFormatter(JsonFormatter())
>>> logger.addHandler(handler); logger.propagate = False
>>> logger.warning("retrying %s", "e1", extra={"event_id": "e1", "amount": 99})
>>> record = orjson.loads(out.getvalue())
>>> record["level"], record["message"], record["event_id"], "amount" in record
('warning', 'retrying e1', 'e1', False)
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

from engine.domain.decision import Decision
from engine.domain.events import Event
from engine.errors import ConfigError

# The only extra fields a record may carry: correlation ids, never customer data.
CORRELATION_FIELDS = ("event_id", "decision_id", "alert_id", "customer_id", "channel", "path", "verdict")
FORMATS = ("json", "text")
_TEXT = "%(asctime)s %(levelname)s %(name)s %(message)s"
decisions_log = logging.getLogger("beacon.decisions")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CORRELATION_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                doc[name] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


def logging_config(level: str, fmt: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for the root logger (Faust's worker takes it too)."""
    if fmt not in FORMATS:
        raise ConfigError(f"log_format is one of {', '.join(FORMATS)}, got {fmt!r}")
    formatter: dict[str, Any] = {"()": JsonFormatter} if fmt == "json" else {"format": _TEXT}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"beacon": formatter},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "beacon", "stream": sys.stderr}
        },
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        # Chatty libraries: their INFO lines are per-connection noise at a bank's volume.
        "loggers": {name: {"level": "WARNING"} for name in ("aiokafka", "kafka", "aiohttp.access")},
    }


def ids(event: Event, decision_id: str | None = None) -> dict[str, str]:
    """The correlation fields of an event, for ``extra=``."""
    out = {"event_id": event.event_id, "customer_id": event.customer_id, "channel": event.channel}
    if decision_id is not None:
        out["decision_id"] = decision_id
    return out


def log_decision(path: str, decision: Decision) -> None:
    """One DEBUG line per fresh decision, for tracing a single event end to end."""
    if decisions_log.isEnabledFor(logging.DEBUG):
        extra = {**ids(decision.event, decision.decision_id), "path": path, "verdict": decision.risk.verdict}
        decisions_log.debug("decided %s", ",".join(a.id for a in decision.actions) or "-", extra=extra)
