"""The OpenAPI 3.1 document, generated from the routes and models that validate requests.

Because the same pydantic models parse bodies and queries and describe them
here, the document and the behaviour cannot drift apart.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from shared.edge.api import Api, Route

_PARAM = re.compile(r"<(?:(\w+):)?(\w+)>")
_PROBLEM = {"$ref": "#/components/schemas/Problem"}
_REASONS = {
    400: "Malformed request", 401: "Missing or invalid access token",
    403: "Not allowed for this caller", 404: "Not found", 409: "Conflict with the current state",
    413: "Body too large", 415: "Unsupported media type", 422: "Validation failed",
    429: "Too many requests", 503: "A backing service is down",
}


class Problem(BaseModel):
    """RFC 9457 problem details; validation problems add `errors`."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[dict[str, str]] | None = None


def _path(rule: str) -> tuple[str, list[dict[str, Any]]]:
    params = []
    for converter, name in _PARAM.findall(rule):
        schema: dict[str, Any] = {"type": "string"}
        if converter == "uuid":
            schema["format"] = "uuid"
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
    return _PARAM.sub(r"{\2}", rule), params


def _query_params(model: type[BaseModel], defs: dict[str, Any]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    defs.update(schema.get("$defs", {}))
    required = set(schema.get("required", []))
    return [{"name": name, "in": "query", "required": name in required, "schema": prop}
            for name, prop in schema.get("properties", {}).items()]


def _operation(function: str, route: Route, refs: dict[Any, Any],
               defs: dict[str, Any]) -> dict[str, Any]:
    _, params = _path(route.path)
    operation: dict[str, Any] = {
        "operationId": route.view.__name__,
        "summary": route.summary,
        "tags": [function],
        "parameters": params + (_query_params(route.query, defs) if route.query else []),
    }
    if route.body is not None:
        operation["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": refs[(route.body, "validation")]}}}
    elif route.raw_body:
        operation["requestBody"] = {"required": True, "content": {
            media: {"schema": {"type": "string", "contentMediaType": media}}
            for media in route.raw_body}}
    ok: dict[str, Any] = {"description": "OK" if route.status < 300 else "Accepted"}
    if route.response is not None:
        ok["content"] = {"application/json": {"schema": refs[(route.response, "serialization")]}}
    responses: dict[str, Any] = {str(route.status): ok}
    statuses = set(route.errors)
    if route.body is not None or route.query is not None:
        statuses |= {400, 422}
    if route.roles is not None:
        statuses |= {401, 403}
        operation["security"] = [{"bearer": []}]
    for status in sorted(statuses):
        responses[str(status)] = {"description": _REASONS.get(status, "Error"), "content": {
            "application/problem+json": {"schema": _PROBLEM}}}
    operation["responses"] = responses
    return operation


def document(apis: dict[str, Api], version: str) -> dict[str, Any]:
    models: list[tuple[type[BaseModel], Any]] = [(Problem, "serialization")]
    for api in apis.values():
        for route in api.routes:
            if route.body is not None:
                models.append((route.body, "validation"))
            if route.response is not None:
                models.append((route.response, "serialization"))
    refs, schemas = models_json_schema(list(dict.fromkeys(models)),
                                       ref_template="#/components/schemas/{model}")
    defs: dict[str, Any] = dict(schemas.get("$defs", {}))
    paths: dict[str, dict[str, Any]] = {}
    for function, api in sorted(apis.items()):
        for route in api.routes:
            path, _ = _path(route.path)
            paths.setdefault(path, {})[route.method.lower()] = _operation(
                function, route, refs, defs)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Marketplace API", "version": version,
                 "description": "Courses, bookings and payments; errors are RFC 9457 problems."},
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(defs.items())),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "bearerFormat": "JWT"}},
        },
    }
