"""The OpenAPI 3.1 document, generated from the routes and models that validate requests.

Because the same pydantic models parse bodies and queries and describe them
here, the document and the behaviour cannot drift apart. What the edge does
for every route (`shared.edge.api`) is said here once, for every route:

- a JSON body may be left out when all its fields are optional (it is `{}`);
  one that is not JSON is a 400, one past `MAX_JSON_BYTES` a 413;
- no text taken holds U+0000, so every plain string of a request says so;
- text that is stripped of surrounding space and may not be empty may not be
  blank either (`_Generator`);
- a path parameter that does not parse (a UUID) matches no route: a 404;
- a backing service that is down is a 503, on any route.

A query model that ties its fields together (`dependentRequired`, say) is one
exploded object parameter, the one form OpenAPI gives such a rule. What a
view reads by itself, outside its route's models (a raw body, a header), is
given by its caller (`read_by_views`). An answer carrying an id that another
operation's path takes links to that operation (`_link`): a client, or a
stateful test, can follow it.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue, models_json_schema
from pydantic_core import core_schema

from shared.edge.api import WHITE_SPACE, Api, Route

_PARAM = re.compile(r"<(?:(\w+):)?(\w+)>")
_COMPONENTS = "#/components/schemas/"
_PROBLEM = {"$ref": f"{_COMPONENTS}Problem"}
_REASONS = {
    400: "Malformed request", 401: "Missing or invalid access token",
    403: "Not allowed for this caller", 404: "Not found", 409: "Conflict with the current state",
    413: "Body too large", 415: "Unsupported media type", 422: "Validation failed",
    429: "Too many requests", 503: "A backing service is down",
}
NO_NUL = "^[^\\u0000]*$"  # the regex `^[^\u0000]*$`: PostgreSQL text cannot hold U+0000
NOT_BLANK = f"[^{WHITE_SPACE}]"  # a character a strip keeps (`\S` differs by dialect)
# Keywords of a query model that relate its fields: they need the model as one parameter.
_JOINT = frozenset({"dependentRequired", "dependentSchemas", "anyOf", "oneOf", "allOf", "not",
                    "if"})
_NOT_PLAIN = frozenset({"format", "enum", "const", "contentMediaType"})


class _Generator(GenerateJsonSchema):
    """pydantic's schemas, and: a stripped string with a minimum length contains a non-space.

    (`"  "` stripped is `""`, a 422 for a `minLength: 1` the schema would otherwise allow;
    the strip is a model's `str_strip_whitespace` or a field's own.)
    """

    _strip = False

    def model_schema(self, schema: core_schema.ModelSchema) -> JsonSchemaValue:
        outer = self._strip
        self._strip = bool(schema.get("config", {}).get("str_strip_whitespace"))
        try:
            return super().model_schema(schema)
        finally:
            self._strip = outer

    def str_schema(self, schema: core_schema.StringSchema) -> JsonSchemaValue:
        json_schema = super().str_schema(schema)
        if schema.get("strip_whitespace", self._strip) and schema.get("min_length", 0) >= 1:
            if "pattern" in json_schema:
                json_schema.setdefault("allOf", []).append({"pattern": NOT_BLANK})
            else:
                json_schema["pattern"] = NOT_BLANK
        return json_schema


class Problem(BaseModel):
    """RFC 9457 problem details; validation problems add `errors`."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[dict[str, str]] | None = None


def refuse_nul(schema: Any, defs: Mapping[str, Any], seen: set[str] | None = None) -> None:
    """Say of every plain string in `schema` (and the components it names) that it has no NUL."""
    seen = set() if seen is None else seen
    if isinstance(schema, list):
        for item in schema:
            refuse_nul(item, defs, seen)
        return
    if not isinstance(schema, dict):
        return
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith(_COMPONENTS) and ref not in seen:
        seen.add(ref)
        refuse_nul(defs.get(ref.removeprefix(_COMPONENTS)), defs, seen)
    said = schema.get("pattern") == NO_NUL or {"pattern": NO_NUL} in schema.get("allOf", [])
    if schema.get("type") == "string" and not _NOT_PLAIN & set(schema) and not said:
        if "pattern" in schema:
            schema.setdefault("allOf", []).append({"pattern": NO_NUL})
        else:
            schema["pattern"] = NO_NUL
    for key, value in list(schema.items()):
        if key in {"properties", "patternProperties", "dependentSchemas"}:
            refuse_nul(list(value.values()), defs, seen)
        elif key in {"items", "additionalProperties", "not", "contains", "propertyNames",
                     "if", "then", "else", "anyOf", "oneOf", "allOf", "prefixItems"}:
            refuse_nul(value, defs, seen)


def _path(rule: str) -> tuple[str, list[dict[str, Any]]]:
    params = []
    for converter, name in _PARAM.findall(rule):
        schema: dict[str, Any] = {"type": "string"}
        if converter == "uuid":
            schema["format"] = "uuid"
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
    return _PARAM.sub(r"{\2}", rule), params


def _present(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter is there, with a value, or not there: it is never null."""
    if schema.get("default", ...) is None:
        del schema["default"]
    kinds = [kind for kind in schema.pop("anyOf", []) if kind != {"type": "null"}]
    if len(kinds) == 1:
        schema.update(kinds[0])
    elif kinds:
        schema["anyOf"] = kinds
    return schema


def _query_params(model: type[BaseModel], defs: dict[str, Any]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template=_COMPONENTS + "{model}",
                                     schema_generator=_Generator)
    defs.update(schema.pop("$defs", {}))
    for prop in schema.get("properties", {}).values():
        _present(prop)
    refuse_nul(schema, defs)
    required = set(schema.get("required", []))
    if _JOINT & set(schema):  # one object, its members `name=value` each (form, exploded)
        schema.pop("title", None)
        return [{"name": "query", "in": "query", "required": bool(required), "style": "form",
                 "explode": True, "schema": schema}]
    return [{"name": name, "in": "query", "required": name in required, "schema": prop}
            for name, prop in schema.get("properties", {}).items()]


def _may_be_left_out(model: type[BaseModel]) -> bool:
    """`parse_body` reads an empty body as `{}`: it may be left out when that is valid."""
    try:
        model.model_validate({})
    except ValidationError:
        return False
    return True


def _raw_body(route: Route, read: Mapping[str, Any]) -> dict[str, Any]:
    """A body the view reads itself: what its caller says of it, else bytes of the media type."""
    content = {}
    for media in route.raw_body:
        schema = read.get("body") if media == "application/json" else None
        content[media] = {"schema": schema or {"type": "string", "format": "binary",
                                               "contentMediaType": media}}
    return {"required": True, "content": content}


def _operation(function: str, route: Route, refs: dict[Any, Any], defs: dict[str, Any],
               read: Mapping[str, Any]) -> dict[str, Any]:
    _, params = _path(route.path)
    operation: dict[str, Any] = {
        "operationId": route.view.__name__,
        "summary": route.summary,
        "tags": [function],
        "parameters": params + (_query_params(route.query, defs) if route.query else [])
        + list(read.get("parameters", [])),
    }
    statuses = set(route.errors) | {503}
    if route.body is not None:
        body = refs[(route.body, "validation")]
        refuse_nul(body, defs)
        operation["requestBody"] = {"required": not _may_be_left_out(route.body),
                                    "content": {"application/json": {"schema": body}}}
        statuses |= {400, 413, 422}
    elif route.raw_body:
        operation["requestBody"] = _raw_body(route, read)
    ok: dict[str, Any] = {"description": "OK" if route.status < 300 else "Accepted"}
    if route.response is not None:
        ok["content"] = {"application/json": {"schema": refs[(route.response, "serialization")]}}
    responses: dict[str, Any] = {str(route.status): ok}
    if route.query is not None:
        statuses.add(422)
    if params:
        statuses.add(404)
    if route.roles is not None:
        statuses |= {401, 403}
        operation["security"] = [{"bearer": []}]
    for status in sorted(statuses):
        responses[str(status)] = {"description": _REASONS.get(status, "Error"), "content": {
            "application/problem+json": {"schema": _PROBLEM}}}
    operation["responses"] = responses
    return operation


def _link(paths: dict[str, dict[str, Any]], defs: Mapping[str, Any]) -> None:
    """Add OpenAPI links: from each success answer with a `<name>_id` UUID at its top level
    to every operation whose path parameters it all gives."""
    takes = [(op["operationId"], [p["name"] for p in op["parameters"] if p["in"] == "path"])
             for ops in paths.values() for op in ops.values()]
    for ops in paths.values():
        for op in ops.values():
            status, ok = next(iter(op["responses"].items()))
            ref = ok.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref")
            answer = defs.get(str(ref).removeprefix(_COMPONENTS), {}) if ref else {}
            ids = {name for name, prop in answer.get("properties", {}).items()
                   if name.endswith("_id") and prop.get("format") == "uuid"}
            links = {target: {"operationId": target,
                              "parameters": {name: f"$response.body#/{name}" for name in names}}
                     for target, names in takes if names and set(names) <= ids}
            if links:
                op["responses"][status]["links"] = dict(sorted(links.items()))


def document(apis: dict[str, Api], version: str,
             read_by_views: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """The document of every route; `read_by_views` adds, by operationId, what a view reads
    itself: `parameters` (a header, say) and the `body` schema of a raw JSON body."""
    read_by_views = read_by_views or {}
    models: list[tuple[type[BaseModel], Any]] = [(Problem, "serialization")]
    for api in apis.values():
        for route in api.routes:
            if route.body is not None:
                models.append((route.body, "validation"))
            if route.response is not None:
                models.append((route.response, "serialization"))
    refs, schemas = models_json_schema(list(dict.fromkeys(models)),
                                       ref_template=_COMPONENTS + "{model}",
                                       schema_generator=_Generator)
    defs: dict[str, Any] = dict(schemas.get("$defs", {}))
    paths: dict[str, dict[str, Any]] = {}
    for function, api in sorted(apis.items()):
        for route in api.routes:
            path, _ = _path(route.path)
            read = copy.deepcopy(dict(read_by_views.get(route.view.__name__, {})))
            refuse_nul(read.get("body"), defs)
            refuse_nul([p.get("schema") for p in read.get("parameters", [])], defs)
            paths.setdefault(path, {})[route.method.lower()] = _operation(
                function, route, refs, defs, read)
    _link(paths, defs)
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
