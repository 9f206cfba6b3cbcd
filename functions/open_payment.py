"""Payment was requested: open a payment the user can pay while the hold lasts."""

from __future__ import annotations

from shared.domain.events import PaymentRequested
from shared.domain.payments import open_payment_row
from shared.runtime.reactions import Emitted, UnitOfWork, reaction


@reaction(PaymentRequested)
def open_payment(event: PaymentRequested, uow: UnitOfWork) -> Emitted:
    open_payment_row(uow.tx, event.booking_id)
    return None
