"""A booking was requested: reserve one of the course's tickets for it, or say why not."""

from __future__ import annotations

from shared.domain.events import (
    BookingRequested,
    TicketReserved,
    TicketUnavailable,
    UnavailableReason,
)
from shared.runtime.reactions import Emitted, UnitOfWork, reaction

# Skip tickets another reservation is taking right now instead of queueing behind it.
_TAKE_FREE_TICKET = """
UPDATE tickets SET status = 'RESERVED', booking_id = :booking, updated_at = now()
WHERE ticket_id = (
    SELECT ticket_id FROM tickets
    WHERE course_id = :course AND status = 'AVAILABLE'
    ORDER BY ticket_id LIMIT 1
    FOR UPDATE {mode}
)
RETURNING ticket_id
"""


@reaction(BookingRequested)
def reserve_ticket(event: BookingRequested, uow: UnitOfWork) -> Emitted:
    booking = uow.tx.one(
        "SELECT status FROM bookings WHERE booking_id = :b FOR UPDATE", b=event.booking_id
    )
    if booking is None or booking["status"] != "PENDING":
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

    ids = {"booking": event.booking_id, "course": event.course_id}
    ticket = uow.tx.one(_TAKE_FREE_TICKET.format(mode="SKIP LOCKED"), **ids) or uow.tx.one(
        # every free ticket was locked: wait, in case one of them is rolled back
        _TAKE_FREE_TICKET.format(mode=""), **ids
    )
    if ticket is None:
        return unavailable("sold_out")

    uow.tx.execute(
        "UPDATE bookings SET ticket_id = :t, amount_cents = :amount, currency = :cur,"
        " updated_at = now() WHERE booking_id = :b",
        t=ticket["ticket_id"], amount=course["price_cents"], cur=course["currency"],
        b=event.booking_id,
    )
    return TicketReserved(
        booking_id=event.booking_id, ticket_id=ticket["ticket_id"], course_id=event.course_id,
        user_id=event.user_id, amount_cents=course["price_cents"], currency=course["currency"],
    )
