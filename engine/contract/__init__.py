"""The published contract: the OpenAPI 3.1 document of the HTTP API (openapi.json)."""

from __future__ import annotations

from importlib import resources
from typing import Any, cast

import orjson

OPENAPI = resources.files("engine.contract").joinpath("openapi.json").read_bytes()


def topic_schema(stem: str) -> dict[str, Any]:
    """The JSON Schema (2020-12) of a topic's records: ``engine/contract/topics/<stem>.schema.json``."""
    text = resources.files("engine.contract").joinpath("topics", f"{stem}.schema.json").read_bytes()
    return cast(dict[str, Any], orjson.loads(text))
