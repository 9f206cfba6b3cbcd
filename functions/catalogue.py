"""The HTTP function behind /courses: publish a course and read it with its ticket counts."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import flask
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from shared.db import Row, Tx
from shared.events import CoursePublished
from shared.http import Api, Request, endpoint, not_found
from shared.runtime import UnitOfWork, unit_of_work

api = Api()
SOURCE = "/marketplace/functions/catalogue"

CurrencyCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]


class NewCourse(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    title: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    description: Annotated[str, StringConstraints(max_length=10_000)] = ""
    price_cents: Annotated[int, Field(ge=0, le=100_000_000, strict=True)]
    currency: CurrencyCode
    starts_at: AwareDatetime
    capacity: Annotated[int, Field(ge=1, le=10_000, strict=True)]


def course_view(tx: Tx, course: Row) -> dict[str, Any]:
    counts = {r["status"]: r["n"] for r in tx.all(
        "SELECT status, count(*) AS n FROM tickets WHERE course_id = :c GROUP BY status",
        c=course["course_id"],
    )}
    return {
        "course_id": str(course["course_id"]),
        "title": course["title"],
        "description": course["description"],
        "price_cents": course["price_cents"],
        "currency": course["currency"],
        "starts_at": course["starts_at"].isoformat(),
        "status": course["status"],
        "author_id": str(course["author_id"]),
        "capacity": course["capacity"],
        "available": counts.get("AVAILABLE", 0),
        "reserved": counts.get("RESERVED", 0),
        "sold": counts.get("SOLD", 0),
        "created_at": course["created_at"].isoformat(),
    }


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
    uow.tx.execute(
        "INSERT INTO tickets (ticket_id, course_id)"
        " SELECT gen_random_uuid(), :c FROM generate_series(1, :n)",
        c=course_id, n=body.capacity,
    )
    uow.emit(CoursePublished(
        course_id=course_id, author_id=author_id, title=body.title,
        price_cents=body.price_cents, currency=body.currency, starts_at=body.starts_at,
        capacity=body.capacity,
    ))
    return course_view(uow.tx, course)


@api.route("POST", "/courses", body=NewCourse, roles={"author", "admin"}, status=201)
def publish_course(request: Request) -> object:
    with unit_of_work(SOURCE) as uow:
        return create_course(uow, request.user.user_id, request.body)


@api.route("GET", "/courses/<uuid:course_id>")
def get_course(request: Request) -> object:
    with unit_of_work(SOURCE) as uow:
        course = uow.tx.one("SELECT * FROM courses WHERE course_id = :c",
                            c=request.params["course_id"])
        if course is None:
            raise not_found("course")
        return course_view(uow.tx, course)


@endpoint("/courses")
def catalogue(request: flask.Request) -> flask.Response:
    return api.dispatch(request)
