"""A booking ended: its ticket is sold if confirmed, back on sale otherwise."""

from __future__ import annotations

from shared.domain.events import BookingCancelled, BookingConfirmed, BookingExpired
from shared.runtime.reactions import Emitted, UnitOfWork, reaction


@reaction(BookingConfirmed, BookingCancelled, BookingExpired)
def settle_ticket(event: BookingConfirmed | BookingCancelled | BookingExpired,
                  uow: UnitOfWork) -> Emitted:
    if isinstance(event, BookingConfirmed):
        uow.tx.execute(
            "UPDATE tickets SET status = 'SOLD', updated_at = now()"
            " WHERE booking_id = :b AND status = 'RESERVED'", b=event.booking_id,
        )
    else:
        uow.tx.execute(
            "UPDATE tickets SET status = 'AVAILABLE', booking_id = NULL, updated_at = now()"
            " WHERE booking_id = :b AND status = 'RESERVED'", b=event.booking_id,
        )
    return None
