"""The HTTP function behind /bookings: request a booking, pay for it, cancel it, read it.

Also its history, `GET /bookings/{id}/timeline` (read by `shared.domain.timeline`).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias

import flask
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from shared.adapters import stripe_provider
from shared.domain import bookings as booking_machine
from shared.domain import holds, payments, tickets, timeline
from shared.domain.bookings import CANCELLABLE, TERMINAL, BookingStatus
from shared.domain.events import BookingCancelled, BookingRequested, PaymentSucceeded
from shared.domain.machines import literal_of
from shared.domain.payments import PaymentStatus
from shared.edge import idempotency, limits
from shared.edge.api import (
    Api,
    Caller,
    Page,
    PageQuery,
    Problem,
    Query,
    Reply,
    conflict,
    equal_to,
    not_found,
    page_of,
    select_page,
)
from shared.edge.roles import SIGNED_IN, Role
from shared.runtime import changes, tracing
from shared.runtime.bootstrap import runtime
from shared.runtime.config import Settings
from shared.runtime.db import Row
from shared.runtime.unit_of_work import UnitOfWork, unit_of_work

api = Api()
SOURCE = "/marketplace/functions/bookings"


class NewBooking(BaseModel):
    model_config = ConfigDict(extra="forbid")
    course_id: uuid.UUID


class Payment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    payment_method: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = Field(
        None, description="a card token (pm_card_visa); without one, confirm with the"
        " client_secret at the provider")


# The statuses' strings as a Literal: the API document shows it inline under each
# field's title, as it would not an enum (a $ref), and a bad one's 422 names the strings.
if TYPE_CHECKING:
    Status: TypeAlias = BookingStatus
    PaymentAnswer: TypeAlias = PaymentStatus
else:
    Status = literal_of(BookingStatus)
    PaymentAnswer = literal_of((PaymentStatus.REQUIRES_PAYMENT, PaymentStatus.PROCESSING,
                                PaymentStatus.SUCCEEDED))
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
    status: PaymentAnswer
    provider: Literal["stripe", "none"]
    provider_payment_id: str | None
    client_secret: str | None


class WaitQuery(Query):
    """A long-poll instead of a polling loop: answer once the booking is in `wait_for`."""

    # `timeout` without `wait_for` is a 422 (get_booking): the document says so too.
    model_config = ConfigDict(extra="forbid",
                              json_schema_extra={"dependentRequired": {"timeout": ["wait_for"]}})
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


def own_booking(uow: UnitOfWork, booking_id: uuid.UUID, who: Caller, lock: str = "") -> Row:
    """The booking, if the caller may see it; someone else's is a 404 so ids leak nothing."""
    row = uow.tx.one(f"SELECT * FROM bookings WHERE booking_id = :b {lock}", b=booking_id)
    if row is None or (who.role != Role.ADMIN and row["user_id"] != who.user_id):
        raise not_found("booking")
    return row


@api.route("POST", "/bookings", roles=SIGNED_IN, status=202, errors=(409, 422, 429))
def request_booking(body: NewBooking, caller: Caller, raw: flask.Request) -> Reply[Accepted]:
    """Ask for a ticket; the answer comes as the booking's status (Idempotency-Key honoured).

    At most `BOOKINGS_PER_USER_PER_COURSE` live bookings per user and course
    (a 409 naming the one in progress), rate-limited per user and address, and
    only for a course that exists and is on sale.
    """
    rt = runtime()
    limits.check(rt.redis, rt.settings, "BOOKINGS_PER_USER", str(caller.user_id))
    limits.check(rt.redis, rt.settings, "BOOKINGS_PER_ADDRESS",
                 limits.client_address(raw, rt.settings))
    key = idempotency.key_of(raw)
    booking_id = uuid.uuid4()
    answer = {"booking_id": str(booking_id), "status": BookingStatus.PENDING.value}
    with unit_of_work(SOURCE) as uow:
        if key is not None:
            # A concurrent retry with the same key waits here until this one commits.
            first = idempotency.claim(uow.tx, caller.user_id, key,
                                      idempotency.fingerprint(body.model_dump(mode="json")),
                                      (202, answer))
            if first is not None:
                return first
        course = uow.tx.one("SELECT status FROM courses WHERE course_id = :c", c=body.course_id)
        if course is None:
            raise Problem(422, "Validation Failed", "no such course",
                          [{"field": "course_id", "message": "no course has this id"}])
        if course["status"] != "ACTIVE":
            raise conflict("the course is not on sale")
        _take_slot(uow, caller.user_id, body.course_id, booking_id, rt.settings)
        booking = booking_machine.request(
            uow.tx, booking_id, body.course_id, caller.user_id,
            tracing.current_traceparent() or None,  # the whole saga continues this trace
        )
        uow.emit(BookingRequested(booking_id=booking_id, user_id=caller.user_id,
                                  course_id=body.course_id, requested_at=booking.created_at))
    return answer


def _take_slot(uow: UnitOfWork, user_id: uuid.UUID, course_id: uuid.UUID,
               booking_id: uuid.UUID, settings: Settings) -> None:
    """One of the user's live-booking slots on the course, or a 409 naming a booking in progress.

    PostgreSQL decides (the slots' primary key): a concurrent request for the
    same slot waits for this one's commit, then tries the next slot.
    """
    for _ in range(3):  # a concurrent request may take the free slot first
        # With k slots taken one of 1..k+1 is free: the search costs k, not the cap.
        free = uow.tx.scalar(
            "WITH taken AS (SELECT slot FROM booking_slots WHERE user_id = :u"
            " AND course_id = :c)"
            " SELECT s FROM generate_series(1, LEAST(:n, (SELECT count(*) FROM taken) + 1)) s"
            " WHERE s NOT IN (SELECT slot FROM taken) ORDER BY s LIMIT 1",
            n=settings.bookings_per_user_per_course, u=user_id, c=course_id)
        if free is None:
            break
        if uow.tx.execute("INSERT INTO booking_slots (user_id, course_id, slot, booking_id)"
                          " VALUES (:u, :c, :s, :b) ON CONFLICT DO NOTHING",
                          u=user_id, c=course_id, s=free, b=booking_id):
            return
    live = uow.tx.scalar("SELECT booking_id FROM booking_slots WHERE user_id = :u"
                         " AND course_id = :c ORDER BY slot LIMIT 1", u=user_id, c=course_id)
    raise Problem(409, "Booking In Progress",
                  f"you already have a booking in progress for this course: {live}",
                  extensions={"booking_id": str(live)})


@api.route("GET", "/bookings", roles=SIGNED_IN)
def list_bookings(query: BookingQuery, caller: Caller) -> Page:
    """The caller's bookings; an admin sees everyone's and may filter by user."""
    where, params = [], dict[str, Any]()
    if caller.role != Role.ADMIN:
        if query.user_id is not None and query.user_id != caller.user_id:
            raise Problem(403, "Forbidden", "only an admin may list other users' bookings")
        where.append("user_id = :me")
        params["me"] = caller.user_id
    equal_to(where, params, status=query.status, course_id=query.course_id,
             user_id=query.user_id)
    with unit_of_work(SOURCE) as uow:
        rows, total = select_page(uow.tx, "bookings", where, params,
                                  "created_at DESC, booking_id", query)
    return page_of([booking_view(r) for r in rows], query, total)


@api.route("GET", "/bookings/<uuid:booking_id>", roles=SIGNED_IN, errors=(404,))
def get_booking(booking_id: uuid.UUID, query: WaitQuery, caller: Caller) -> Reply[Booking]:
    """One booking, the caller's own (or any, for an admin); `wait_for` waits for a status.

    The wait holds no database connection: each read is a short transaction,
    made again when the booking's change is announced (`shared.runtime.changes`) and
    at least every second, in case an announcement was lost.
    """
    if query.wait_for is None and "timeout" in query.model_fields_set:
        raise Problem(422, "Validation Failed", "timeout only applies with wait_for",
                      [{"field": "wait_for", "message": "required when timeout is given"}])

    def read() -> dict[str, Any]:
        with unit_of_work(SOURCE) as uow:
            return booking_view(own_booking(uow, booking_id, caller))

    wanted = query.wait_for
    if wanted is None:
        return read()
    listener = changes.listener(runtime().settings.redis_url)
    return changes.wait_until(listener, str(booking_id), read,
                              lambda b: b["status"] == wanted or b["status"] in TERMINAL,
                              query.timeout)


@api.route("GET", "/bookings/<uuid:booking_id>/timeline", roles=SIGNED_IN, errors=(404,))
def booking_timeline(booking_id: uuid.UUID, caller: Caller) -> timeline.Timeline:
    """The booking's saga: every event, who emitted and handled it and when, what was sent."""
    with unit_of_work(SOURCE) as uow:
        booking = own_booking(uow, booking_id, caller)
        return timeline.read(uow.tx, booking)


@api.route("POST", "/bookings/<uuid:booking_id>/payment", roles=SIGNED_IN, status=202,
           errors=(400, 404, 409, 422, 503))
def pay(booking_id: uuid.UUID, body: Payment, caller: Caller, raw: flask.Request
        ) -> Reply[PaymentAccepted]:
    """Pay for a booking awaiting payment: its PaymentIntent, confirmed with a card token if given.

    Without `payment_method` the answer's `client_secret` lets the client
    confirm the intent with the provider itself. The booking is settled by
    the provider's word (its webhook), never by this answer. Provider calls
    happen between short transactions, never inside one.
    """
    key = idempotency.key_of(raw)
    print_ = idempotency.fingerprint("pay", str(booking_id), body.model_dump(mode="json"))
    if key is not None:
        with unit_of_work(SOURCE) as uow:
            first = idempotency.first_answer(uow.tx, caller.user_id, key, print_)
        if first is not None:
            return first
    answer = _pay(booking_id, caller, body.payment_method)
    if key is not None:
        with unit_of_work(SOURCE) as uow:
            first = idempotency.claim(uow.tx, caller.user_id, key, print_, (202, answer))
        if first is not None:
            return first
    return answer


def _pay(booking_id: uuid.UUID, user: Caller, method: str | None) -> dict[str, Any]:
    with unit_of_work(SOURCE) as uow:
        booking = own_booking(uow, booking_id, user, "FOR SHARE")
        tracing.adopt(booking["trace_context"])  # paying is part of the booking's trace
        if booking["user_id"] != user.user_id:
            raise not_found("booking")  # an admin may read it, only its user pays it
        if (booking["status"] != BookingStatus.AWAITING_PAYMENT
                or booking["hold_expires_at"] <= uow.now):
            raise conflict(f"the booking is {booking['status']}, not awaiting payment")
        payment = payments.open_payment_row(uow.tx, booking_id)
        if payment is None or payment.status is not PaymentStatus.REQUIRES_PAYMENT:
            raise conflict("this booking's payment was already made or closed")
        if payment.amount_cents == 0:  # free: nothing for a provider to take
            payments.succeed_free(uow.tx, payment.payment_id)
            uow.emit(PaymentSucceeded(payment_id=payment.payment_id, booking_id=booking_id,
                                      amount_cents=0, currency=payment.currency,
                                      charge_id=payments.FREE_CHARGE_ID))
            return _payment_answer(payment, PaymentStatus.SUCCEEDED, payments.FREE_PROVIDER)
    provider = runtime().provider
    if payment.provider_payment_id is None:
        intent = provider.create_intent(str(payment.payment_id), str(booking_id),
                                        payment.amount_cents, payment.currency)
        with unit_of_work(SOURCE) as uow:
            # A concurrent payment of the same booking stored its intent first: use that one.
            payment = payments.store_intent(uow.tx, payment, stripe_provider.PROVIDER, intent.id,
                                            intent.client_secret)
    intent_id = payment.provider_payment_id
    assert intent_id is not None
    status = PaymentStatus.REQUIRES_PAYMENT
    if method is not None:
        try:
            provider.confirm(intent_id, method)
        except stripe_provider.UnknownPaymentMethod as exc:
            raise Problem(400, "Bad Request", "the payment provider does not know this method",
                          [{"field": "payment_method", "message": "unknown payment method"}]
                          ) from exc
        except stripe_provider.ProviderRefused as exc:
            raise conflict("this booking's payment can no longer be made") from exc
        with unit_of_work(SOURCE) as uow:  # forward only: the webhook may have been faster
            payments.start_processing(uow.tx, payment.payment_id, method)
        status = PaymentStatus.PROCESSING
    return _payment_answer(payment, status, stripe_provider.PROVIDER)


def _payment_answer(payment: payments.Payment, status: PaymentStatus, provider: str
                    ) -> dict[str, Any]:
    return {"booking_id": str(payment.booking_id), "payment_id": str(payment.payment_id),
            "status": status.value, "provider": provider,
            "provider_payment_id": payment.provider_payment_id,
            "client_secret": payment.client_secret}


@api.route("POST", "/bookings/<uuid:booking_id>/cancel", roles=SIGNED_IN, status=202,
           errors=(404, 409, 422))
def cancel(booking_id: uuid.UUID, caller: Caller, raw: flask.Request) -> Reply[Accepted]:
    """Cancel a booking that is pending or awaiting payment; its ticket goes back on sale."""
    key = idempotency.key_of(raw)
    answer = {"booking_id": str(booking_id), "status": BookingStatus.CANCELLED.value}
    with unit_of_work(SOURCE) as uow:
        if key is not None:
            first = idempotency.claim(uow.tx, caller.user_id, key,
                                      idempotency.fingerprint("cancel", str(booking_id)),
                                      (202, answer))
            if first is not None:
                return first
        booking = own_booking(uow, booking_id, caller, "FOR UPDATE")
        tracing.adopt(booking["trace_context"])  # so is cancelling
        if booking["status"] not in CANCELLABLE:
            raise conflict(f"the booking is {booking['status']} and can no longer be cancelled")
        holds.close_hold(uow.redis, booking["booking_id"], booking["hold_expires_at"],
                         booking["trace_context"])
        booking_machine.cancel(uow.tx, booking["booking_id"], "user_cancelled")
        tickets.release(uow.tx, booking["booking_id"])  # none yet, if it was still PENDING
        uow.emit(BookingCancelled(
            booking_id=booking["booking_id"], user_id=booking["user_id"],
            course_id=booking["course_id"], ticket_id=booking["ticket_id"],
            reason="user_cancelled",
        ))
    return answer


bookings = api.function("/bookings")
