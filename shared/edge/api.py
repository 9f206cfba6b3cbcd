"""The HTTP edge: views that say by annotation what they take, and RFC 9457 errors.

A view has the shape of a reaction: the types of its parameters say what it
takes, as `reserve_ticket(event: BookingRequested, uow: UnitOfWork)` does, and
all of it is validated before the view runs, so a view neither parses nor
checks a token, and its body model is written once:

    api = Api()

    @api.route("POST", "/bookings/<uuid:booking_id>/payment", roles=SIGNED_IN, status=202,
               errors=(404, 409))
    def pay(booking_id: UUID, body: Payment, caller: Caller, raw: flask.Request
            ) -> Reply[PaymentAccepted]:
        ...

    bookings = api.function("/bookings")

- a parameter named like one of the path's gets it, converted by the rule (`uuid:`);
- a `Query` model is the query string, any other pydantic model the JSON body,
  each a 422 naming its fields when it does not validate;
- `Caller` is who the bearer token names, on a route with `roles` (a 401
  without a valid token, a 403 for a role not admitted);
- `flask.Request` is the request itself: its headers, or a body the view reads
  itself (`raw_body=` names its media types, as the avatar upload does).

The return annotation names the answer's model, which the OpenAPI document
shows: the model itself, or `Reply[Model]` when the view may answer with the
model's JSON or an Idempotency-Key's first answer. `status`, `errors` and
`roles` stay explicit in the route. The module's function is derived from its
`Api` (`api.function(prefixes)`), under the module's name, since that is the
name functions-framework loads (`functions/<target>.py`).

Every error leaves as `application/problem+json`; malformed input is a 4xx,
never a 500.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import re
import time
import types
import typing
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeAlias, TypeVar, Union, cast
from uuid import UUID

import flask
import functions_framework
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule

from shared.edge import tokens
from shared.edge.roles import Role
from shared.runtime import logs, metrics, tracing
from shared.runtime.db import Row, Tx
from shared.runtime.errors import SchemaBehind, TransientError, is_outage
from shared.runtime.routing import Endpoint, register_endpoint, source_of_handler

log = logging.getLogger("marketplace.http")

PROBLEM_JSON = "application/problem+json"


def _lower_domain(address: str) -> str:
    local, _, domain = address.rpartition("@")
    return f"{local}@{domain.lower()}"


# Unicode's White_Space, spelled out: what a strip removes, and what `\s` means in the
# validator's regex dialect but not quite in the document's (ECMA-262) or in Python's.
WHITE_SPACE = r"\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"

# Deliberately plain: one @, a dotted domain, no spaces. Whether it receives mail is
# for the welcome email to find out, and local domains (admin@marketplace.local) are fine.
Email = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=320,
                      pattern=f"^[^@{WHITE_SPACE}]{{1,64}}@[^@{WHITE_SPACE}]+"
                              f"\\.[^@{WHITE_SPACE}.]+$"),
    AfterValidator(_lower_domain),
]


# Shared by accounts (registering) and users (changing a profile).
Phone = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^\+?[0-9 ()-]{5,20}$")]

T = TypeVar("T")


def _not_null(value: T | None) -> T | None:
    if value is None:
        raise ValueError("may not be null (leave the field out instead)")
    return value


def _never_null(schema: dict[str, Any]) -> None:
    schema.pop("default", None)
    kinds = [kind for kind in schema.pop("anyOf", []) if kind != {"type": "null"}]
    if len(kinds) == 1:
        schema.update(kinds[0])
    elif kinds:
        schema["anyOf"] = kinds


# A field of a change that may be left out (kept as it is) but is never null (it cannot
# be cleared): the document says so (no `null`, no default), and a null is a 422 naming it.
Omittable = Annotated[T | None, AfterValidator(_not_null), Field(json_schema_extra=_never_null)]


class Problem(Exception):
    """An error answer; raise it anywhere in a view."""

    def __init__(self, status: int, title: str, detail: str = "",
                 errors: list[dict[str, str]] | None = None,
                 headers: dict[str, str] | None = None,
                 extensions: dict[str, Any] | None = None) -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail or title
        self.errors = errors
        self.headers = headers or {}
        self.extensions = extensions or {}  # RFC 9457 extension members

    def response(self) -> flask.Response:
        body: dict[str, Any] = {
            "type": f"https://marketplace.local/problems/{self.title.lower().replace(' ', '-')}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.errors is not None:
            body["errors"] = self.errors
        body.update(self.extensions)
        return flask.Response(json.dumps(body), self.status, self.headers, mimetype=PROBLEM_JSON)


def not_found(what: str = "resource") -> Problem:
    return Problem(404, "Not Found", f"no such {what}")


def conflict(detail: str) -> Problem:
    return Problem(409, "Conflict", detail)


def validation_problem(exc: ValidationError, where: str = "body") -> Problem:
    errors = [
        {"field": ".".join(str(p) for p in err["loc"]) or where, "message": err["msg"]}
        for err in exc.errors()
    ]
    return Problem(422, "Validation Failed", f"the request {where} is not valid", errors)


@dataclass(frozen=True)
class Caller:
    """Who sent the request: the account its access token names, and the login it belongs to."""

    user_id: UUID
    role: Role
    session_id: UUID


class Query(BaseModel):
    """A model of the query string: a view taking one gets it parsed from the URL.

    Any other model a view takes is its JSON body, so the two are told apart by type.
    """


M = TypeVar("M", bound=BaseModel)

# A view's answer documented as model M: M itself, its JSON form, or the first answer
# (status, body) stored under the request's Idempotency-Key.
Reply: TypeAlias = M | dict[str, Any] | tuple[int, Any]

View = Callable[..., Any]
V = TypeVar("V", bound=View)
HttpFunction = Callable[[flask.Request], flask.Response]
Taken = Literal["path", "query", "body", "caller", "raw"]


@dataclass(frozen=True)
class Route:
    """One operation, described well enough to validate it and to document it."""

    method: str
    path: str
    view: View
    body: type[BaseModel] | None
    query: type[Query] | None
    response: type[BaseModel] | None
    roles: frozenset[str] | None  # None: anyone
    status: int
    errors: tuple[int, ...]
    raw_body: tuple[str, ...]  # media types of a non-JSON body (an image upload)
    takes: tuple[tuple[str, Taken], ...]  # the view's parameters, in order, and what each gets

    @property
    def summary(self) -> str:
        return (self.view.__doc__ or self.view.__name__).strip().splitlines()[0]


class PageQuery(Query):
    """`page` (from 1) and `size` (1..100): every list takes them."""

    model_config = ConfigDict(extra="forbid")
    page: int = Field(1, ge=1, le=1_000_000)
    size: int = Field(20, ge=1, le=100)


def _model_of(hint: Any) -> type[BaseModel] | None:
    """The one pydantic model a return annotation names (alone or in a union), if any."""
    union = typing.get_origin(hint) in (Union, types.UnionType)
    members = typing.get_args(hint) if union else (hint,)
    models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
    if len(models) > 1:
        raise TypeError(f"an answer has one model, not {', '.join(m.__name__ for m in models)}")
    return models[0] if models else None


def _taken(name: str, hint: Any, path_params: Collection[str]) -> Taken:
    if hint is Caller:
        return "caller"
    if hint is flask.Request:
        return "raw"
    if isinstance(hint, type) and issubclass(hint, Query):
        return "query"
    if isinstance(hint, type) and issubclass(hint, BaseModel):
        return "body"
    if name in path_params:
        return "path"
    raise TypeError(f"{name!r}: a view takes path parameters by name, a Query, a body model,"
                    " the Caller or the flask.Request")


def _route(method: str, path: str, view: View, path_params: Collection[str],
           roles: frozenset[str] | None, status: int, errors: tuple[int, ...],
           raw_body: tuple[str, ...]) -> Route:
    """The route `view` declares by its signature; a signature it cannot serve fails at import."""
    hints = typing.get_type_hints(view)
    takes: list[tuple[str, Taken]] = []
    models: dict[Taken, Any] = {}
    for name in inspect.signature(view).parameters:
        if name not in hints:
            raise TypeError(f"{view.__name__}({name}): say what it takes by its annotation")
        taken = _taken(name, hints[name], path_params)
        if taken in models and taken != "path":
            raise TypeError(f"{view.__name__} takes its {taken} twice")
        models[taken] = hints[name]
        takes.append((name, taken))
    where = f"{method} {path} ({view.__name__})"
    if "caller" in models and roles is None:
        raise TypeError(f"{where}: only a route with roles knows its caller")
    if "body" in models and raw_body:
        raise TypeError(f"{where}: a body is either a model or raw, not both")
    return Route(method, path, view, models.get("body"), models.get("query"),
                 _model_of(hints.get("return")), roles, status, errors, raw_body, tuple(takes))


class Api:
    """The routes one HTTP function serves."""

    def __init__(self) -> None:
        self.routes: list[Route] = []
        self._map = Map(strict_slashes=False, merge_slashes=False)

    def route(self, method: str, path: str, *, roles: Collection[str] | None = None,
              status: int = 200, errors: tuple[int, ...] = (), raw_body: tuple[str, ...] = ()
              ) -> Callable[[V], V]:
        """Serve `view` at `method path`, giving it what its parameters' types ask for."""

        def decorate(view: V) -> V:
            rule = Rule(path, methods=[method], endpoint=len(self.routes))
            self._map.add(rule)
            self.routes.append(_route(method, path, view, rule.arguments,
                                      frozenset(roles) if roles is not None else None,
                                      status, errors, raw_body))
            return view

        return decorate

    def function(self, *prefixes: str) -> HttpFunction:
        """The module's functions-framework function: these routes, behind `prefixes`.

        Named after the module that declares the views (`functions/<target>.py`),
        which is the name functions-framework looks up in it, so assign it to that name.
        """
        modules = {route.view.__module__ for route in self.routes}
        if len(modules) != 1:
            raise TypeError(f"an Api's views live in one module, not {sorted(modules)}")
        target = modules.pop().rpartition(".")[2]
        return _http_function(target, prefixes, source_of_handler(self.routes[0].view),
                              self.dispatch)

    def dispatch(self, raw: flask.Request) -> flask.Response:
        try:
            return self._dispatch(raw)
        except Problem as problem:
            return problem.response()
        except SchemaBehind as exc:
            log.error("%s %s: %s", raw.method, raw.path, exc)
            return exc.response()
        except TransientError as exc:  # the payment provider is down, say: nothing changed
            log.warning("%s %s: not now: %s", raw.method, raw.path, exc)
            return Problem(503, "Unavailable", "a service this needs is unavailable; try again",
                           headers={"Retry-After": "2"}).response()
        except Exception as exc:
            if is_outage(exc):
                log.warning("%s %s: a backing service is unreachable: %s", raw.method,
                            raw.path, exc)
                return Problem(503, "Unavailable", "a backing service is unreachable; try again",
                               headers={"Retry-After": "1"}).response()
            log.exception("%s %s failed", raw.method, raw.path)
            return Problem(500, "Internal Server Error", "the request could not be completed"
                           ).response()

    def _dispatch(self, raw: flask.Request) -> flask.Response:
        adapter = self._map.bind("marketplace", path_info=raw.path)
        try:
            index, params = adapter.match(method=raw.method)
        except MethodNotAllowed as exc:
            allowed = ", ".join(sorted(exc.valid_methods or []))
            raise Problem(405, "Method Not Allowed", f"use {allowed}",
                          headers={"Allow": allowed}) from exc
        except NotFound as exc:
            raise not_found("route") from exc
        route = self.routes[index]
        span = tracing.current()
        if span is not None:
            span.attributes["http.route"] = route.path
        given: dict[Taken, Any] = {"raw": raw}
        if route.roles is not None:
            given["caller"] = authenticate(raw)
            if given["caller"].role not in route.roles:
                raise Problem(403, "Forbidden", "your role may not do this")
        if route.query is not None:
            given["query"] = parse_query(raw, route.query)
        if route.body is not None:
            given["body"] = parse_body(raw, route.body)
        result = route.view(**{name: params[name] if taken == "path" else given[taken]
                               for name, taken in route.takes})
        if isinstance(result, flask.Response):
            return result
        status = route.status
        if isinstance(result, tuple):
            status, result = result
        if result is None:
            return flask.Response(status=status)
        if isinstance(result, BaseModel):
            return flask.Response(result.model_dump_json(), status, mimetype="application/json")
        return flask.Response(json.dumps(result, default=str), status, mimetype="application/json")


def _refuse_nul(value: Any, where: str) -> None:
    """PostgreSQL text cannot hold U+0000: name the field instead of failing later."""
    if isinstance(value, str):
        if "\x00" in value:
            raise Problem(422, "Validation Failed", "text may not contain NUL characters",
                          [{"field": where, "message": "contains a NUL character"}])
    elif isinstance(value, dict):
        for key, item in value.items():
            _refuse_nul(key, where)
            _refuse_nul(item, f"{where}.{key}" if where != "body" else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _refuse_nul(item, f"{where}.{index}")


def parse_query(raw: flask.Request, model: type[BaseModel]) -> BaseModel:
    values: dict[str, Any] = {}
    for name in raw.args:
        given = raw.args.getlist(name)
        values[name] = given[0] if len(given) == 1 else given
        _refuse_nul(values[name], name)
    try:
        return _in_utc(model.model_validate(values), values, "query")
    except ValidationError as exc:
        raise validation_problem(exc, "query") from exc


# RFC 3339's date-time, zone required (`T` and `Z` in either case), as the document says.
_DATE_TIME = re.compile(r"\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)")


def _in_utc(parsed: BaseModel, given: dict[str, Any], where: str) -> BaseModel:
    """Every date-time taken is RFC 3339 with a zone, and in UTC from here on.

    pydantic alone also takes a Unix time (`0.5`, `0`) for one, and keeps any
    offset (up to 23:59), so a time past the year 9999 in UTC would fail only in
    the database driver. A query's bound past that range finds what the range's
    end finds; a body's is refused, naming the field.
    """
    errors: list[dict[str, str]] = []
    for name, info in type(parsed).model_fields.items():
        value = getattr(parsed, name)
        if not isinstance(value, datetime):
            continue
        key = info.alias if info.alias in given else name  # as it was given
        if not (isinstance(given.get(key), str) and _DATE_TIME.fullmatch(given[key])):
            errors.append({"field": key, "message": "not an RFC 3339 date-time with a zone"})
            continue
        try:
            value = value.astimezone(UTC)
        except OverflowError:
            if where != "query":
                errors.append({"field": key, "message": "out of range (years 1 to 9999, UTC)"})
                continue
            value = (datetime.min if value.year == 1 else datetime.max).replace(tzinfo=UTC)
        setattr(parsed, name, value)
    if errors:
        raise Problem(422, "Validation Failed", f"the request {where} is not valid", errors)
    return parsed


MAX_JSON_BYTES = 64 * 1024


def read_body(raw: flask.Request, limit: int) -> bytes:
    """The body, refused with a 413 once it passes `limit` bytes: announced or streamed.

    Never more than `limit` + 1 bytes are read, with a `Content-Length` or
    without one (chunked): a large body costs the reader nothing but the refusal.
    """
    if raw.content_length is not None and raw.content_length > limit:
        raise Problem(413, "Content Too Large", f"the body may be at most {limit} bytes")
    data = raw.stream.read(limit + 1)
    if len(data) > limit:
        raise Problem(413, "Content Too Large", f"the body may be at most {limit} bytes")
    return bytes(data)


def parse_body(raw: flask.Request, model: type[BaseModel]) -> BaseModel:
    data = read_body(raw, MAX_JSON_BYTES)
    if not data:
        try:  # a body whose every field is optional may be left out
            return model.model_validate({})
        except ValidationError:
            raise Problem(400, "Bad Request", "a JSON body is required") from None
    try:
        payload = json.loads(data)
    except ValueError as exc:
        raise Problem(400, "Bad Request", f"the body is not valid JSON: {exc}") from exc
    except RecursionError as exc:  # [[[[... deeper than the parser's stack
        raise Problem(400, "Bad Request", "the body is nested too deeply") from exc
    if not isinstance(payload, dict):
        raise Problem(422, "Validation Failed", "the body must be a JSON object",
                      [{"field": "body", "message": "must be an object"}])
    _refuse_nul(payload, "body")
    try:
        return _in_utc(model.model_validate(payload), payload, "body")
    except ValidationError as exc:
        raise validation_problem(exc) from exc


def authenticate(raw: flask.Request) -> Caller:
    header = raw.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Problem(401, "Unauthorized", "a bearer access token is required",
                      headers={"WWW-Authenticate": "Bearer"})
    claims = tokens.verify_access(token.strip())
    if claims is None:
        raise Problem(401, "Unauthorized", "the access token is invalid or expired",
                      headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    try:
        return Caller(UUID(claims["sub"]), Role(claims["role"]), UUID(claims["sid"]))
    except ValueError as exc:
        raise Problem(401, "Unauthorized", "the access token is invalid") from exc


def endpoint(*prefixes: str) -> Callable[[HttpFunction], HttpFunction]:
    """Declare a hand-written HTTP function (not an `Api`'s) and the prefixes routed to it."""

    def decorate(function: HttpFunction) -> HttpFunction:
        return _http_function(function.__name__, prefixes, source_of_handler(function), function)

    return decorate


def _http_function(target: str, prefixes: tuple[str, ...], source: str,
                   serve: HttpFunction) -> HttpFunction:
    """`serve` as the functions-framework function `target`, in the routing declaration."""
    register_endpoint(Endpoint(target, prefixes, source))
    logs.setup()
    metrics.expose_on_current_app()
    _problems_on_current_app()

    @functools.wraps(serve)
    def observed(raw: flask.Request) -> flask.Response:
        return _observed(target, serve, raw)

    observed.__name__ = observed.__qualname__ = target  # the name functions-framework finds
    return cast(HttpFunction, functions_framework.http(observed))


def _problems_on_current_app() -> None:
    """Flask's own answers are problems too: a path no rule of the function's app matches
    (`/users/%0A/role`: its `<path:path>` takes no newline), a method it does not serve."""
    if not flask.has_app_context():
        return

    def problem(error: HTTPException) -> flask.Response:
        headers = {k: v for k, v in error.get_headers() if k.lower() != "content-type"}
        detail = "no such route" if error.code == 404 else (error.description or error.name)
        return Problem(error.code or 500, error.name, detail, headers=headers).response()

    flask.current_app.register_error_handler(HTTPException, problem)


def _observed(name: str, function: HttpFunction, raw: flask.Request) -> flask.Response:
    """Serve one request in its span (continuing an incoming `traceparent`), count and log it."""
    started = time.perf_counter()
    span = tracing.begin(name, "server", raw.headers.get("traceparent"),
                         raw.headers.get("tracestate", ""))
    span.attributes["http.request.method"] = raw.method
    status = 500
    try:
        with tracing.active(span):
            response = function(raw)
            status = response.status_code
            span.attributes["http.response.status_code"] = status
            if status >= 500:
                span.attributes["error"] = f"HTTP {status}"
            return response
    finally:
        route = str(span.attributes.get("http.route", "unmatched"))
        metrics.http_request(name, raw.method, route, status)
        logs.request(name, raw.method, route, raw.path, status, span.trace_id,
                     time.perf_counter() - started)


class Page(BaseModel):
    """The answer of every list: one page of items and how many there are in all."""

    items: list[Any]
    page: int
    size: int
    total: int


def select_page(tx: Tx, table: str, where: list[str], params: dict[str, Any], order: str,
                query: PageQuery) -> tuple[list[Row], int]:
    """One page of `table`'s rows matching every condition, and how many match in all.

    `table`, `where` and `order` are written by the caller from whitelisted names;
    values only ever travel in `params`.
    """
    condition = " AND ".join(where) or "true"
    total = int(tx.scalar(f"SELECT count(*) FROM {table} WHERE {condition}", **params))
    rows = tx.all(f"SELECT * FROM {table} WHERE {condition} ORDER BY {order}"
                  " LIMIT :page_limit OFFSET :page_offset",
                  page_limit=query.size, page_offset=(query.page - 1) * query.size, **params)
    return rows, total


def equal_to(where: list[str], params: dict[str, Any], **values: Any) -> None:
    """Add `column = :column` to `where` for each value given; None filters nothing.

    The columns are keyword names the caller wrote, so they are safe to splice.
    """
    for column, value in values.items():
        if value is not None:
            where.append(f"{column} = :{column}")
            params[column] = value


def sort_clause(sort: str, tie_breaker: str) -> str:
    """`-name` means descending; the names come from a Literal, so they are safe to splice."""
    return f"{sort.lstrip('-')} {'DESC' if sort.startswith('-') else 'ASC'}, {tie_breaker}"


def page_of(items: list[Any], query: PageQuery, total: int) -> Page:
    return Page(items=items, page=query.page, size=query.size, total=total)
