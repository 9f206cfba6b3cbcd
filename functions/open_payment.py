"""Payment was requested: open a payment the user can pay while the hold lasts."""

from __future__ import annotations

from shared.domain.events import PaymentRequested
from shared.domain.payments import open_payment_row
from shared.runtime.reactions import reaction
from shared.runtime.unit_of_work import Emitted, UnitOfWork


@reaction(PaymentRequested)
def open_payment(event: PaymentRequested, uow: UnitOfWork) -> Emitted:
    open_payment_row(uow.tx, event.booking_id)
    return None
