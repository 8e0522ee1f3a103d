"""Reading events (JSON Lines or CSV) and customer profiles (CSV) from files.

CSV events use the event's field names as columns; ``lat``/``lon`` become ``geo`` and
any other column goes to ``attributes``. Empty cells are absent values.

>>> rows = list(read_events_text("event_id,customer_id,channel,type,ts,amount,lat,lon,branch\\n"
...     "e1,c1,atm,withdrawal,1795428000,20.5,51.5,-0.12,B7\\n", "x.csv"))
>>> rows[0]["amount"], rows[0]["geo"], rows[0]["attributes"]
(20.5, {'lat': 51.5, 'lon': -0.12}, {'branch': 'B7'})
>>> profile_from_row({"customer_id": "c1", "segment": "mass", "products": "current;savings"})
('c1', {'segment': 'mass', 'products': ['current', 'savings']})
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from engine.errors import BeaconError, EventError

_EVENT_COLUMNS = {
    "event_id", "customer_id", "channel", "type", "ts", "amount", "currency",
    "device_id", "terminal_id", "session_id",
}  # fmt: skip
_NUMERIC = {"amount"}
_PROFILE_INTS = {"tenure_months"}


class FileFormatError(BeaconError):
    """A line of an input file cannot be read."""


def read_events(path: str | Path) -> Iterator[dict[str, Any]]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FileFormatError(f"cannot read {p}: {exc}") from exc
    yield from read_events_text(text, p.name)


def read_events_text(text: str, name: str) -> Iterator[dict[str, Any]]:
    if name.endswith(".csv"):
        for row in csv.DictReader(io.StringIO(text)):
            yield _event_from_row(row)
        return
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise FileFormatError(f"{name}:{lineno}: not valid JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise FileFormatError(f"{name}:{lineno}: each line must be a JSON object")
        yield value


def _number_or_text(value: str) -> Any:
    try:
        return float(value) if any(c in value for c in ".eE") else int(value)
    except ValueError:
        return value


def _event_from_row(row: dict[str, str]) -> dict[str, Any]:
    event: dict[str, Any] = {}
    attributes: dict[str, Any] = {}
    for key, value in row.items():
        if value is None or value == "" or key is None:
            continue
        if key in _NUMERIC or key == "ts":
            event[key] = _number_or_text(value)
        elif key in _EVENT_COLUMNS:
            event[key] = value
        elif key not in ("lat", "lon"):
            attributes[key] = value
    if row.get("lat") and row.get("lon"):
        event["geo"] = {"lat": _number_or_text(row["lat"]), "lon": _number_or_text(row["lon"])}
    if attributes:
        event["attributes"] = attributes
    return event


def profile_from_row(row: dict[str, str]) -> tuple[str, dict[str, Any]]:
    """One CSV row -> (customer id, profile). Lists are ';'-separated."""
    customer_id = (row.get("customer_id") or "").strip()
    if not customer_id:
        raise EventError("missing_field", "customer_id is empty", "customer_id")
    profile: dict[str, Any] = {}
    for key, value in row.items():
        if key in (None, "customer_id") or value is None or value.strip() == "":
            continue
        value = value.strip()
        if key == "products":
            profile[key] = [p.strip() for p in value.split(";") if p.strip()]
        elif key in _PROFILE_INTS:
            try:
                profile[key] = int(value)
            except ValueError as exc:
                raise EventError("wrong_type", f"{key} must be a whole number", key) from exc
        elif key in ("home_lat", "home_lon"):
            try:
                profile.setdefault("home_geo", {})[key[5:]] = float(value)
            except ValueError as exc:
                raise EventError("wrong_type", f"{key} must be a number", key) from exc
        else:
            profile[key] = value
    return customer_id, profile
