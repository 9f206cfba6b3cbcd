"""The HTTP function behind /bookings: request a booking, pay for it, cancel it, read it.

Also its history, `GET /bookings/{id}/timeline` (read by `shared.domain.timeline`).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import flask
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from shared.domain import holds, payments, timeline
from shared.domain.events import BookingCancelled, BookingRequested, PaymentFailed, PaymentSucceeded
from shared.edge.api import (
    Api,
    Page,
    PageQuery,
    Principal,
    Problem,
    Request,
    conflict,
    endpoint,
    equal_to,
    not_found,
    page_of,
    select_page,
)
from shared.runtime import changes, tracing
from shared.runtime.bootstrap import runtime
from shared.runtime.db import Row
from shared.runtime.reactions import UnitOfWork, unit_of_work

api = Api()
SOURCE = "/marketplace/functions/bookings"
ANYONE_SIGNED_IN = {"user", "author", "admin"}


class NewBooking(BaseModel):
    model_config = ConfigDict(extra="forbid")
    course_id: uuid.UUID


class Payment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    payment_method: Annotated[str, StringConstraints(min_length=1, max_length=100)]


Status = Literal["PENDING", "AWAITING_PAYMENT", "CONFIRMED", "REJECTED", "CANCELLED", "EXPIRED"]
FINAL: frozenset[str] = frozenset({"CONFIRMED", "REJECTED", "CANCELLED", "EXPIRED"})
DEFAULT_WAIT_SECONDS = 10


class Booking(BaseModel):
    booking_id: uuid.UUID
    course_id: uuid.UUID
    user_id: uuid.UUID
    ticket_id: uuid.UUID | None
    status: Status
    amount_cents: int | None
    currency: str | None
    hold_expires_at: datetime | None
    reason: str | None
    created_at: datetime
    updated_at: datetime


class Accepted(BaseModel):
    booking_id: uuid.UUID
    status: Status


class PaymentAccepted(BaseModel):
    booking_id: uuid.UUID
    payment_id: uuid.UUID
    status: Literal["PROCESSING"]


class WaitQuery(BaseModel):
    """A long-poll instead of a polling loop: answer once the booking is in `wait_for`."""

    model_config = ConfigDict(extra="forbid")
    wait_for: Status | None = Field(None, description=(
        "answer as soon as the booking is in this status or a final one"
        " (CONFIRMED, REJECTED, CANCELLED, EXPIRED)"))
    timeout: int = Field(DEFAULT_WAIT_SECONDS, ge=1, le=30, description=(
        "with wait_for: answer with the current state after this many seconds"))


class BookingQuery(PageQuery):
    status: Status | None = None
    course_id: uuid.UUID | None = None
    user_id: uuid.UUID | None = None


def booking_view(row: Row) -> dict[str, Any]:
    return Booking.model_validate(row).model_dump(mode="json")


def own_booking(uow: UnitOfWork, booking_id: uuid.UUID, who: Principal, lock: str = "") -> Row:
    """The booking, if the caller may see it; someone else's is a 404 so ids leak nothing."""
    row = uow.tx.one(f"SELECT * FROM bookings WHERE booking_id = :b {lock}", b=booking_id)
    if row is None or (who.role != "admin" and row["user_id"] != who.user_id):
        raise not_found("booking")
    return row


@api.route("POST", "/bookings", body=NewBooking, roles=ANYONE_SIGNED_IN, response=Accepted,
           status=202, errors=(422,))
def request_booking(request: Request) -> object:
    """Ask for a ticket; the answer comes as the booking's status (Idempotency-Key honoured)."""
    body: NewBooking = request.body
    user = request.user
    key = request.raw.headers.get("Idempotency-Key")
    if key is not None and (not 1 <= len(key) <= 200 or not key.isprintable()):
        raise Problem(400, "Bad Request", "Idempotency-Key must be 1..200 printable characters")
    fingerprint = hashlib.sha256(json.dumps(body.model_dump(mode="json")).encode()).hexdigest()
    booking_id = uuid.uuid4()
    answer = {"booking_id": str(booking_id), "status": "PENDING"}
    with unit_of_work(SOURCE) as uow:
        if key is not None:
            # A concurrent retry with the same key waits here until this one commits.
            fresh = uow.tx.execute(
                "INSERT INTO idempotency_keys (user_id, key, request_hash, status_code, response)"
                " VALUES (:u, :k, :h, 202, CAST(:r AS jsonb)) ON CONFLICT DO NOTHING",
                u=user.user_id, k=key, h=fingerprint, r=json.dumps(answer),
            )
            if not fresh:
                first = uow.tx.one(
                    "SELECT request_hash, status_code, response FROM idempotency_keys"
                    " WHERE user_id = :u AND key = :k", u=user.user_id, k=key,
                )
                assert first is not None
                if first["request_hash"] != fingerprint:
                    raise Problem(422, "Idempotency Key Reused",
                                  "this Idempotency-Key was used with a different body")
                return first["status_code"], first["response"]
        row = uow.tx.one(
            "INSERT INTO bookings (booking_id, course_id, user_id, trace_context)"
            " VALUES (:b, :c, :u, :t) RETURNING created_at",
            b=booking_id, c=body.course_id, u=user.user_id,
            t=tracing.current_traceparent() or None,  # the whole saga continues this trace
        )
        assert row is not None
        uow.emit(BookingRequested(booking_id=booking_id, user_id=user.user_id,
                                  course_id=body.course_id, requested_at=row["created_at"]))
    return answer


@api.route("GET", "/bookings", query=BookingQuery, roles=ANYONE_SIGNED_IN, response=Page)
def list_bookings(request: Request) -> object:
    """The caller's bookings; an admin sees everyone's and may filter by user."""
    query: BookingQuery = request.query
    user = request.user
    where, params = [], dict[str, Any]()
    if user.role != "admin":
        if query.user_id is not None and query.user_id != user.user_id:
            raise Problem(403, "Forbidden", "only an admin may list other users' bookings")
        where.append("user_id = :me")
        params["me"] = user.user_id
    equal_to(where, params, status=query.status, course_id=query.course_id,
             user_id=query.user_id)
    with unit_of_work(SOURCE) as uow:
        rows, total = select_page(uow.tx, "bookings", where, params,
                                  "created_at DESC, booking_id", query)
    return page_of([booking_view(r) for r in rows], query, total)


@api.route("GET", "/bookings/<uuid:booking_id>", query=WaitQuery, roles=ANYONE_SIGNED_IN,
           response=Booking, errors=(404,))
def get_booking(request: Request) -> object:
    """One booking, the caller's own (or any, for an admin); `wait_for` waits for a status.

    The wait holds no database connection: each read is a short transaction,
    made again when the booking's change is announced (`shared.runtime.changes`) and
    at least every second, in case an announcement was lost.
    """
    query: WaitQuery = request.query
    booking_id: uuid.UUID = request.params["booking_id"]
    if query.wait_for is None and "timeout" in query.model_fields_set:
        raise Problem(422, "Validation Failed", "timeout only applies with wait_for",
                      [{"field": "wait_for", "message": "required when timeout is given"}])

    def read() -> dict[str, Any]:
        with unit_of_work(SOURCE) as uow:
            return booking_view(own_booking(uow, booking_id, request.user))

    wanted = query.wait_for
    if wanted is None:
        return read()
    listener = changes.listener(runtime().settings.redis_url)
    return changes.wait_until(listener, str(booking_id), read,
                              lambda b: b["status"] == wanted or b["status"] in FINAL,
                              query.timeout)


@api.route("GET", "/bookings/<uuid:booking_id>/timeline", roles=ANYONE_SIGNED_IN,
           response=timeline.Timeline, errors=(404,))
def booking_timeline(request: Request) -> object:
    """The booking's saga: every event, who emitted and handled it and when, what was sent."""
    with unit_of_work(SOURCE) as uow:
        booking = own_booking(uow, request.params["booking_id"], request.user)
        return timeline.read(uow.tx, booking)


@api.route("POST", "/bookings/<uuid:booking_id>/payment", body=Payment, roles=ANYONE_SIGNED_IN,
           response=PaymentAccepted, status=202, errors=(400, 404, 409))
def pay(request: Request) -> object:
    """Pay for a booking that is awaiting payment (`pm_card_visa`, `pm_card_chargeDeclined`)."""
    body: Payment = request.body
    if not payments.is_known_method(body.payment_method):
        raise Problem(400, "Bad Request", "unknown payment method", [{
            "field": "payment_method",
            "message": f"use one of {', '.join(sorted(payments.TEST_CARDS))}",
        }])
    with unit_of_work(SOURCE) as uow:
        booking = own_booking(uow, request.params["booking_id"], request.user, "FOR SHARE")
        tracing.adopt(booking["trace_context"])  # paying is part of the booking's trace
        if booking["user_id"] != request.user.user_id:
            raise not_found("booking")  # an admin may read it, only its user pays it
        if booking["status"] != "AWAITING_PAYMENT" or booking["hold_expires_at"] <= uow.now:
            raise conflict(f"the booking is {booking['status']}, not awaiting payment")
        payment = payments.open_payment_row(uow.tx, booking["booking_id"])
        if payment is None or payment["status"] != "REQUIRES_PAYMENT":
            raise conflict("this booking's payment was already made or closed")
        result = payments.charge(payment["payment_id"], payment["amount_cents"],
                                 payment["currency"], body.payment_method)
        uow.tx.execute(
            "UPDATE payments SET status = :s, payment_method = :m, charge_id = :ch,"
            " decline_code = :d, updated_at = now() WHERE payment_id = :p",
            s="SUCCEEDED" if result.succeeded else "FAILED", m=body.payment_method,
            ch=result.charge_id, d=result.decline_code, p=payment["payment_id"],
        )
        if result.succeeded:
            uow.emit(PaymentSucceeded(
                payment_id=payment["payment_id"], booking_id=booking["booking_id"],
                amount_cents=payment["amount_cents"], currency=payment["currency"],
                charge_id=result.charge_id,
            ))
        else:
            uow.emit(PaymentFailed(payment_id=payment["payment_id"],
                                   booking_id=booking["booking_id"],
                                   decline_code=result.decline_code or "declined"))
    return {"booking_id": str(booking["booking_id"]), "payment_id": str(payment["payment_id"]),
            "status": "PROCESSING"}


@api.route("POST", "/bookings/<uuid:booking_id>/cancel", roles=ANYONE_SIGNED_IN,
           response=Accepted, status=202, errors=(404, 409))
def cancel(request: Request) -> object:
    """Cancel a booking that is pending or awaiting payment; its ticket goes back on sale."""
    with unit_of_work(SOURCE) as uow:
        booking = own_booking(uow, request.params["booking_id"], request.user, "FOR UPDATE")
        tracing.adopt(booking["trace_context"])  # so is cancelling
        if booking["status"] not in {"PENDING", "AWAITING_PAYMENT"}:
            raise conflict(f"the booking is {booking['status']} and can no longer be cancelled")
        holds.close_hold(uow.redis, booking["booking_id"], booking["hold_expires_at"],
                         booking["trace_context"])
        uow.tx.execute(
            "UPDATE bookings SET status = 'CANCELLED', reason = 'user_cancelled',"
            " updated_at = now() WHERE booking_id = :b", b=booking["booking_id"],
        )
        uow.emit(BookingCancelled(
            booking_id=booking["booking_id"], user_id=booking["user_id"],
            course_id=booking["course_id"], ticket_id=booking["ticket_id"],
            reason="user_cancelled",
        ))
    return {"booking_id": str(booking["booking_id"]), "status": "CANCELLED"}


@endpoint("/bookings")
def bookings(request: flask.Request) -> flask.Response:
    return api.dispatch(request)
