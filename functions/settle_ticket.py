"""A booking ended: its ticket is sold if confirmed, back on sale otherwise."""

from __future__ import annotations

from shared.domain import tickets
from shared.domain.events import BookingCancelled, BookingConfirmed, BookingExpired
from shared.runtime.reactions import reaction
from shared.runtime.unit_of_work import Emitted, UnitOfWork


@reaction(BookingConfirmed, BookingCancelled, BookingExpired)
def settle_ticket(event: BookingConfirmed | BookingCancelled | BookingExpired,
                  uow: UnitOfWork) -> Emitted:
    if isinstance(event, BookingConfirmed):
        tickets.sell(uow.tx, event.booking_id)
    else:
        tickets.release(uow.tx, event.booking_id)
    return None
