"""The hold ran out: the booking expires and its ticket goes back on sale (once, whichever
path noticed first)."""

from __future__ import annotations

from datetime import timedelta

from shared.domain import bookings, tickets
from shared.domain.bookings import BookingStatus
from shared.domain.events import BookingExpired, ReservationExpired
from shared.runtime.errors import TransientError
from shared.runtime.reactions import reaction
from shared.runtime.unit_of_work import Emitted, UnitOfWork

# Redis and PostgreSQL clocks may disagree by a little; more than this is an early alarm.
CLOCK_TOLERANCE = timedelta(seconds=1)


@reaction(ReservationExpired)
def expire_booking(event: ReservationExpired, uow: UnitOfWork) -> Emitted:
    booking = bookings.lock(uow.tx, event.booking_id)
    if (
        booking is None
        or booking.status is not BookingStatus.AWAITING_PAYMENT
        or booking.hold_expires_at != event.hold_expires_at
    ):
        return None  # paid, cancelled, already expired, or a stale hold
    if event.hold_expires_at > uow.now + CLOCK_TOLERANCE:
        raise TransientError(f"hold of {event.booking_id} runs until {event.hold_expires_at}")
    bookings.expire(uow.tx, event.booking_id)
    tickets.release(uow.tx, event.booking_id)
    return BookingExpired(
        booking_id=event.booking_id, user_id=booking.user_id, course_id=booking.course_id,
        ticket_id=booking.ticket_id, hold_expired_at=event.hold_expires_at,
    )
