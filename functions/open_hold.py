"""A ticket was reserved: hold it for the user and ask them to pay."""

from __future__ import annotations

from shared.domain import bookings, holds
from shared.domain.events import PaymentRequested, TicketReserved
from shared.domain.payments import payment_id_for
from shared.runtime.reactions import reaction
from shared.runtime.unit_of_work import Emitted, UnitOfWork


@reaction(TicketReserved)
def open_hold(event: TicketReserved, uow: UnitOfWork) -> Emitted:
    expires_at = holds.deadline(uow.now, uow.settings.hold_ttl_seconds)
    opened = bookings.hold(uow.tx, event.booking_id, expires_at)
    if opened is None:
        return None  # cancelled meanwhile: its ticket is released on booking.cancelled
    # Set before commit: a key left by a rolled-back attempt names a deadline no
    # booking has, so its expiry is ignored.
    holds.open_hold(uow.redis, event.booking_id, expires_at, uow.now, opened.trace_context)
    return PaymentRequested(
        payment_id=payment_id_for(event.booking_id), booking_id=event.booking_id,
        user_id=event.user_id, amount_cents=event.amount_cents, currency=event.currency,
        hold_expires_at=expires_at,
    )
