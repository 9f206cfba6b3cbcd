"""Payment was requested: open a payment the user can pay while the hold lasts."""

from __future__ import annotations

from shared.events import PaymentRequested
from shared.payments import open_payment_row
from shared.runtime import Emitted, UnitOfWork, reaction


@reaction(PaymentRequested)
def open_payment(event: PaymentRequested, uow: UnitOfWork) -> Emitted:
    open_payment_row(uow.tx, event.booking_id)
    return None
