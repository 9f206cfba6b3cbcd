"""A booking was requested: hold one of the course's tickets for the user to pay, or reject it.

Reserving the ticket, opening the hold (its deadline in PostgreSQL and its key in
Redis) and opening the payment are one transaction, so a booking goes from
PENDING to AWAITING_PAYMENT in one delivery; `ticket.reserved` and
`payment.requested` are still emitted, for whoever else reads them. Without a
ticket the booking is rejected in the same transaction (`ticket.unavailable`
and `booking.rejected`). These were four functions, each a hop of its own
through the broker (docs: performance).
"""

from __future__ import annotations

from shared.domain import bookings, holds, payments, tickets
from shared.domain.bookings import BookingStatus
from shared.domain.events import (
    BookingRejected,
    BookingRequested,
    PaymentRequested,
    TicketReserved,
    TicketUnavailable,
    UnavailableReason,
)
from shared.runtime.reactions import reaction
from shared.runtime.unit_of_work import Emitted, UnitOfWork


@reaction(BookingRequested)
def reserve_ticket(event: BookingRequested, uow: UnitOfWork) -> Emitted:
    booking = bookings.lock(uow.tx, event.booking_id)
    if booking is None or booking.status is not BookingStatus.PENDING:
        return None  # cancelled meanwhile, or settled by an earlier delivery

    def unavailable(reason: UnavailableReason) -> Emitted:
        uow.outcome = reason  # a business outcome, counted as such
        bookings.reject(uow.tx, event.booking_id, reason)
        return (
            TicketUnavailable(booking_id=event.booking_id, course_id=event.course_id,
                              user_id=event.user_id, reason=reason),
            BookingRejected(booking_id=event.booking_id, user_id=event.user_id,
                            course_id=event.course_id, reason=reason),
        )

    # FOR SHARE: a course cannot be deactivated halfway through a reservation.
    course = uow.tx.one(
        "SELECT status, price_cents, currency FROM courses WHERE course_id = :c FOR SHARE",
        c=event.course_id,
    )
    if course is None:
        return unavailable("course_not_found")
    if course["status"] != "ACTIVE":
        return unavailable("course_inactive")

    ticket = tickets.reserve(uow.tx, event.course_id, event.booking_id)
    if ticket is None:
        return unavailable("sold_out")

    bookings.attach_ticket(uow.tx, event.booking_id, ticket.ticket_id, course["price_cents"],
                           course["currency"])
    expires_at = holds.deadline(uow.now, uow.settings.hold_ttl_seconds)
    held = bookings.hold(uow.tx, event.booking_id, expires_at)
    assert held is not None  # locked PENDING above
    payments.open_payment_row(uow.tx, event.booking_id)
    # Set before commit: a key left by a rolled-back attempt names a deadline no
    # booking has, so its expiry is ignored.
    holds.open_hold(uow.redis, event.booking_id, expires_at, uow.now, held.trace_context)
    return (
        TicketReserved(
            booking_id=event.booking_id, ticket_id=ticket.ticket_id,
            course_id=event.course_id, user_id=event.user_id,
            amount_cents=course["price_cents"], currency=course["currency"],
        ),
        PaymentRequested(
            payment_id=payments.payment_id_for(event.booking_id), booking_id=event.booking_id,
            user_id=event.user_id, amount_cents=course["price_cents"],
            currency=course["currency"], hold_expires_at=expires_at,
        ),
    )
