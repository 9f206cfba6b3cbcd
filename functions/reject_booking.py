"""No ticket could be reserved: the booking is rejected with the reason."""

from __future__ import annotations

from shared.domain.events import BookingRejected, TicketUnavailable
from shared.runtime.reactions import Emitted, UnitOfWork, reaction


@reaction(TicketUnavailable)
def reject_booking(event: TicketUnavailable, uow: UnitOfWork) -> Emitted:
    rejected = uow.tx.execute(
        "UPDATE bookings SET status = 'REJECTED', reason = :r, updated_at = now()"
        " WHERE booking_id = :b AND status = 'PENDING'",
        r=event.reason, b=event.booking_id,
    )
    if not rejected:
        return None
    return BookingRejected(
        booking_id=event.booking_id, user_id=event.user_id, course_id=event.course_id,
        reason=event.reason,
    )
