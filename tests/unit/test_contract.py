"""The published contract (issue 17): engine/contract/openapi.json is a valid OpenAPI 3.1
document and names exactly the routes and methods agents/web.py serves, both ways.

A merger adding a route or method: add it to openapi.json; ``test_every_served_route_is_in_the_spec``
(or ``test_every_spec_path_is_served``) names what is missing.
"""

from __future__ import annotations

import ast
from pathlib import Path

import orjson
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from engine.contract import OPENAPI, topic_schema
from engine.domain import events

WEB = Path(__file__).resolve().parents[2] / "agents" / "web.py"
METHODS = {"get", "post", "put", "patch", "delete"}
SPEC = orjson.loads(OPENAPI)


def served() -> dict[str, set[str]]:
    """Path -> HTTP methods, read from the ``@app.page`` views in agents/web.py."""
    routes: dict[str, set[str]] = {}
    for node in ast.walk(ast.parse(WEB.read_text())):
        if not isinstance(node, ast.ClassDef):
            continue
        for deco in node.decorator_list:
            if isinstance(deco, ast.Call) and getattr(deco.func, "attr", "") == "page":
                path = ast.literal_eval(deco.args[0])
                routes[path] = {f.name for f in node.body if isinstance(f, ast.AsyncFunctionDef)} & METHODS
    return routes


def test_the_spec_is_valid_openapi_3_1() -> None:
    assert SPEC["openapi"].startswith("3.1")
    validate(SPEC)  # openapi-spec-validator: the 3.1 meta-schema plus its own checks


def test_every_schema_object_is_valid_json_schema_2020_12() -> None:
    for schema in SPEC["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)


def test_every_served_route_is_in_the_spec() -> None:
    routes = served()
    assert "/openapi.json" in routes and len(routes) >= 15
    missing = {(p, m) for p, ms in routes.items() for m in ms if m not in SPEC["paths"].get(p, {})}
    assert not missing, f"served but not in engine/contract/openapi.json: {sorted(missing)}"


def test_every_spec_path_is_served() -> None:
    routes = served()
    extra = {
        (p, m)
        for p, ops in SPEC["paths"].items()
        for m in ops
        if m in METHODS and m not in routes.get(p, set())
    }
    assert not extra, f"in openapi.json but not served by agents/web.py: {sorted(extra)}"


def test_every_error_answer_uses_the_error_shape() -> None:
    for path, ops in SPEC["paths"].items():
        for method, op in ops.items():
            for status, response in op["responses"].items():
                if status.startswith(("4",)):
                    assert response == {"$ref": "#/components/responses/Error"}, (path, method, status)


TOPIC_SCHEMAS = (
    "interactions",
    "decisions",
    "decisions.audit",
    "decisions.shadow",
    "risk.alerts",
    "feedback",
    "dlq",
)


def test_every_topic_schema_is_valid_json_schema_2020_12() -> None:
    for stem in TOPIC_SCHEMAS:
        schema = topic_schema(stem)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema", stem
        Draft202012Validator.check_schema(schema)


def test_the_event_schema_agrees_with_the_parser_field_table() -> None:
    """A field added to engine/domain/events.py _KNOWN must be added to interactions.schema.json."""
    value = topic_schema("interactions")["properties"]["value"]
    assert set(value["properties"]) == set(events._KNOWN)
    assert set(value["required"]) <= set(events._KNOWN)


def test_the_dead_letter_schema_requires_the_reason_headers() -> None:
    headers = topic_schema("dlq")["properties"]["headers"]
    assert {"beacon-error-code", "beacon-source"} <= set(headers["required"])
    assert "beacon-sig" in headers["properties"]
