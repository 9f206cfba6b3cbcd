"""No ticket could be reserved: the booking is rejected with the reason."""

from __future__ import annotations

from shared.domain import bookings
from shared.domain.events import BookingRejected, TicketUnavailable
from shared.runtime.reactions import reaction
from shared.runtime.unit_of_work import Emitted, UnitOfWork


@reaction(TicketUnavailable)
def reject_booking(event: TicketUnavailable, uow: UnitOfWork) -> Emitted:
    if bookings.reject(uow.tx, event.booking_id, event.reason) is None:
        return None  # cancelled meanwhile, or rejected by an earlier delivery
    return BookingRejected(
        booking_id=event.booking_id, user_id=event.user_id, course_id=event.course_id,
        reason=event.reason,
    )
