"""A booking was requested: reserve one of the course's tickets for it, or say why not."""

from __future__ import annotations

from shared.domain import bookings, tickets
from shared.domain.bookings import BookingStatus
from shared.domain.events import (
    BookingRequested,
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

    def unavailable(reason: UnavailableReason) -> TicketUnavailable:
        uow.outcome = reason  # a business outcome, counted as such
        return TicketUnavailable(
            booking_id=event.booking_id, course_id=event.course_id,
            user_id=event.user_id, reason=reason,
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
    return TicketReserved(
        booking_id=event.booking_id, ticket_id=ticket.ticket_id, course_id=event.course_id,
        user_id=event.user_id, amount_cents=course["price_cents"], currency=course["currency"],
    )
