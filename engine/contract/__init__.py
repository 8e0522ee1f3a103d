"""The published contract: the OpenAPI 3.1 document of the HTTP API (openapi.json)."""

from __future__ import annotations

from importlib import resources

OPENAPI = resources.files("engine.contract").joinpath("openapi.json").read_bytes()
