"""A booking closed without being paid: its open payment can no longer be paid."""

from __future__ import annotations

from shared.domain.events import BookingCancelled, BookingExpired
from shared.runtime.reactions import Emitted, UnitOfWork, reaction


@reaction(BookingCancelled, BookingExpired)
def cancel_open_payment(event: BookingCancelled | BookingExpired, uow: UnitOfWork) -> Emitted:
    uow.tx.execute(
        "UPDATE payments SET status = 'CANCELLED', updated_at = now()"
        " WHERE booking_id = :b AND status = 'REQUIRES_PAYMENT'", b=event.booking_id,
    )
    return None
