"""The HTTP function behind /courses: publish, list, change and deactivate courses.

A course's ticket counts are counted from its tickets, never stored beside
them, so `available + reserved + sold == capacity` holds by construction.

What the columns cannot hold is refused before any SQL runs, naming the field:
prices and capacities within their bounds, filters within `bigint`, a known
ISO 4217 currency, and a start in the future.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
)

from shared.domain import tickets
from shared.domain.currencies import CODES, ISO_4217
from shared.domain.events import CourseDeactivated, CoursePublished
from shared.domain.tickets import TicketStatus
from shared.edge.api import (
    Api,
    Caller,
    Omittable,
    Page,
    PageQuery,
    Problem,
    Reply,
    conflict,
    not_found,
    page_of,
    select_page,
    sort_clause,
)
from shared.edge.roles import AUTHORS, Role
from shared.runtime.db import Row, Tx
from shared.runtime.unit_of_work import UnitOfWork, unit_of_work

api = Api()
SOURCE = "/marketplace/functions/catalogue"

BIGINT_MAX = 2**63 - 1  # courses.price_cents is a bigint


def _known_currency(code: str) -> str:
    if code not in ISO_4217:
        raise ValueError("not a current ISO 4217 currency code")
    return code


def _whole(value: object) -> object:
    """JSON has one kind of number: `86753.0` is the integer the schema allows, `0.5` is not."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _ahead(starts_at: datetime) -> datetime:
    if starts_at <= datetime.now(UTC):
        raise ValueError("must be in the future")
    return starts_at


CurrencyCode = Annotated[str, AfterValidator(_known_currency),
                         WithJsonSchema({"type": "string", "enum": list(CODES),
                                         "description": "an ISO 4217 currency code"})]
Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Description = Annotated[str, StringConstraints(max_length=10_000)]
# A whole number within bounds, never "5" or true.
Price = Annotated[int, Field(strict=True, ge=0, le=100_000_000), BeforeValidator(_whole)]
Capacity = Annotated[int, Field(strict=True, ge=1, le=10_000), BeforeValidator(_whole)]
StartsAt = Annotated[AwareDatetime, AfterValidator(_ahead),
                     Field(description="RFC 3339 with a zone, in the future (before 10000 in UTC)")]


class NewCourse(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: Title
    description: Description = ""
    price_cents: Price
    currency: CurrencyCode
    starts_at: StartsAt
    capacity: Capacity


class CourseChange(BaseModel):
    """Any field of a new course but its capacity (tickets are never added or removed).

    A field left out keeps its value; none can be cleared, so null is a 422.
    """

    model_config = ConfigDict(extra="forbid")
    title: Omittable[Title] = None
    description: Omittable[Description] = None
    price_cents: Omittable[Price] = None
    currency: Omittable[CurrencyCode] = None
    starts_at: Omittable[StartsAt] = None


PriceFilter = Annotated[int, Field(ge=0, le=BIGINT_MAX)]


class CourseQuery(PageQuery):
    q: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] | None = None
    status: Literal["ACTIVE", "INACTIVE"] | None = None
    price_min: PriceFilter | None = None
    price_max: PriceFilter | None = None
    starts_from: AwareDatetime | None = None
    starts_to: AwareDatetime | None = None
    sort: Literal["starts_at", "-starts_at", "created_at", "-created_at",
                  "price_cents", "-price_cents"] = "starts_at"


class Course(BaseModel):
    course_id: uuid.UUID
    title: str
    description: str
    price_cents: int
    currency: str
    starts_at: datetime
    status: Literal["ACTIVE", "INACTIVE"]
    author_id: uuid.UUID
    capacity: int
    available: int
    reserved: int
    sold: int
    created_at: datetime


def _counts(tx: Tx, course_ids: list[uuid.UUID]) -> dict[uuid.UUID, dict[str, int]]:
    counts: dict[uuid.UUID, dict[str, int]] = {c: {} for c in course_ids}
    for r in tx.all("SELECT course_id, status, count(*) AS n FROM tickets"
                    " WHERE course_id = ANY(CAST(:ids AS uuid[])) GROUP BY course_id, status",
                    ids=[str(c) for c in course_ids]):
        counts[r["course_id"]][r["status"]] = r["n"]
    return counts


def _view(course: Row, counts: dict[str, int]) -> Course:
    return Course.model_validate({
        **course,
        "available": counts.get(TicketStatus.AVAILABLE, 0),
        "reserved": counts.get(TicketStatus.RESERVED, 0),
        "sold": counts.get(TicketStatus.SOLD, 0),
    })


def course_view(tx: Tx, course: Row) -> dict[str, Any]:
    view = _view(course, _counts(tx, [course["course_id"]])[course["course_id"]])
    return view.model_dump(mode="json")


def create_course(uow: UnitOfWork, author_id: uuid.UUID, body: NewCourse) -> dict[str, Any]:
    """Insert the course and its tickets, emit course.published; returns the course view."""
    course_id = uuid.uuid4()
    course = uow.tx.one(
        "INSERT INTO courses (course_id, author_id, title, description, price_cents,"
        " currency, starts_at, capacity) VALUES (:c, :a, :t, :d, :p, :cur, :s, :cap)"
        " RETURNING *",
        c=course_id, a=author_id, t=body.title, d=body.description,
        p=body.price_cents, cur=body.currency, s=body.starts_at, cap=body.capacity,
    )
    assert course is not None
    tickets.issue(uow.tx, course_id, body.capacity)
    uow.emit(CoursePublished(
        course_id=course_id, author_id=author_id, title=body.title,
        price_cents=body.price_cents, currency=body.currency, starts_at=body.starts_at,
        capacity=body.capacity,
    ))
    return course_view(uow.tx, course)


def _own_course(uow: UnitOfWork, course_id: uuid.UUID, who: Caller) -> Row:
    """The course, locked, if the caller is its author or an admin."""
    course = uow.tx.one("SELECT * FROM courses WHERE course_id = :c FOR UPDATE", c=course_id)
    if course is None:
        raise not_found("course")
    if who.role != Role.ADMIN and course["author_id"] != who.user_id:
        raise Problem(403, "Forbidden", "only the course's author or an admin may change it")
    return course


@api.route("POST", "/courses", roles=AUTHORS, status=201)
def publish_course(body: NewCourse, caller: Caller) -> Reply[Course]:
    """Publish a course with `capacity` tickets."""
    with unit_of_work(SOURCE) as uow:
        return create_course(uow, caller.user_id, body)


@api.route("GET", "/courses")
def list_courses(query: CourseQuery) -> Page:
    """Courses, searched by text in title and description, filtered, sorted and paged."""
    where, params = [], dict[str, Any]()
    if query.q:
        escaped = query.q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        where.append("(title ILIKE :q ESCAPE '\\' OR description ILIKE :q ESCAPE '\\')")
        params["q"] = f"%{escaped}%"
    for column, op, value in (("status", "=", query.status),
                              ("price_cents", ">=", query.price_min),
                              ("price_cents", "<=", query.price_max),
                              ("starts_at", ">=", query.starts_from),
                              ("starts_at", "<", query.starts_to)):
        if value is not None:
            name = f"p{len(params)}"
            where.append(f"{column} {op} :{name}")
            params[name] = value
    with unit_of_work(SOURCE) as uow:
        rows, total = select_page(uow.tx, "courses", where, params,
                                  sort_clause(query.sort, "course_id"), query)
        counts = _counts(uow.tx, [r["course_id"] for r in rows])
    items = [_view(r, counts[r["course_id"]]).model_dump(mode="json") for r in rows]
    return page_of(items, query, total)


@api.route("GET", "/courses/<uuid:course_id>", errors=(404,))
def get_course(course_id: uuid.UUID) -> Reply[Course]:
    """One course with its ticket counts."""
    with unit_of_work(SOURCE) as uow:
        course = uow.tx.one("SELECT * FROM courses WHERE course_id = :c", c=course_id)
        if course is None:
            raise not_found("course")
        return course_view(uow.tx, course)


@api.route("PATCH", "/courses/<uuid:course_id>", roles=AUTHORS, errors=(403, 404))
def change_course(course_id: uuid.UUID, body: CourseChange, caller: Caller) -> Reply[Course]:
    """Change a course's details; a new price applies to tickets reserved from now on."""
    changes = {name: getattr(body, name) for name in body.model_fields_set}  # never null
    with unit_of_work(SOURCE) as uow:
        course = _own_course(uow, course_id, caller)
        if changes:
            sets = ", ".join(f"{name} = :{name}" for name in changes)
            course = uow.tx.one(f"UPDATE courses SET {sets}, updated_at = now()"
                                " WHERE course_id = :c RETURNING *",
                                c=course["course_id"], **changes) or course
        return course_view(uow.tx, course)


@api.route("POST", "/courses/<uuid:course_id>/deactivate", roles=AUTHORS,
           errors=(403, 404, 409))
def deactivate_course(course_id: uuid.UUID, caller: Caller) -> Reply[Course]:
    """Stop selling a course; bookings requested from now on are rejected."""
    with unit_of_work(SOURCE) as uow:
        course = _own_course(uow, course_id, caller)
        if course["status"] != "ACTIVE":
            raise conflict("the course is not active")
        course = uow.tx.one("UPDATE courses SET status = 'INACTIVE', updated_at = now()"
                            " WHERE course_id = :c RETURNING *", c=course["course_id"]) or course
        uow.emit(CourseDeactivated(course_id=course["course_id"], author_id=course["author_id"]))
        return course_view(uow.tx, course)


catalogue = api.function("/courses")
