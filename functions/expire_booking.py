"""The hold ran out: the booking expires (once, whichever path noticed first)."""

from __future__ import annotations

from datetime import timedelta

from shared.domain.events import BookingExpired, ReservationExpired
from shared.runtime.errors import TransientError
from shared.runtime.reactions import Emitted, UnitOfWork, reaction

# Redis and PostgreSQL clocks may disagree by a little; more than this is an early alarm.
CLOCK_TOLERANCE = timedelta(seconds=1)


@reaction(ReservationExpired)
def expire_booking(event: ReservationExpired, uow: UnitOfWork) -> Emitted:
    booking = uow.tx.one(
        "SELECT user_id, course_id, ticket_id, status, hold_expires_at FROM bookings"
        " WHERE booking_id = :b FOR UPDATE",
        b=event.booking_id,
    )
    if (
        booking is None
        or booking["status"] != "AWAITING_PAYMENT"
        or booking["hold_expires_at"] != event.hold_expires_at
    ):
        return None  # paid, cancelled, already expired, or a stale hold
    if booking["hold_expires_at"] > uow.now + CLOCK_TOLERANCE:
        raise TransientError(f"hold of {event.booking_id} runs until {event.hold_expires_at}")
    uow.tx.execute(
        "UPDATE bookings SET status = 'EXPIRED', reason = 'hold_expired', updated_at = now()"
        " WHERE booking_id = :b", b=event.booking_id,
    )
    return BookingExpired(
        booking_id=event.booking_id, user_id=booking["user_id"], course_id=booking["course_id"],
        ticket_id=booking["ticket_id"], hold_expired_at=event.hold_expires_at,
    )
