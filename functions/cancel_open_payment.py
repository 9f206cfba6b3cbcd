"""A booking closed without being paid: its payment can no longer be paid, here or at the provider.

Three steps, since the provider call may not happen inside a transaction:
close our payment (forward only), cancel its intent at the provider, and apply
the provider's answer with this event's inbox row. A redelivery repeats the
first two harmlessly (a cancelled intent stays cancelled) and the inbox makes
the third happen once. If the money came first (the intent had succeeded),
the answer says so: the payment becomes SUCCEEDED and `settle_booking`
refunds it. A provider that is down answers 503, and the event comes again.
"""

from __future__ import annotations

from typing import Any

from shared.domain import payments
from shared.domain.events import BookingCancelled, BookingExpired
from shared.domain.payments import PaymentStatus
from shared.runtime.bootstrap import Runtime
from shared.runtime.envelope import Envelope
from shared.runtime.reactions import effect, handle, source_of
from shared.runtime.unit_of_work import UnitOfWork, unit_of_work

TARGET = "cancel_open_payment"


@effect(BookingCancelled, BookingExpired)
def cancel_open_payment(envelope: Envelope[Any], rt: Runtime) -> None:
    event: BookingCancelled | BookingExpired = envelope.data
    with unit_of_work(source_of(TARGET), rt) as uow:
        payment = payments.close_open(uow.tx, event.booking_id)
    word = None
    if (payment is not None and payment.status is PaymentStatus.CANCELLED
            and payment.provider_payment_id and payment.intent_cancelled_at is None):
        word = payments.word_of(rt.provider.cancel(payment.provider_payment_id))

    def apply(uow: UnitOfWork) -> None:
        if word is not None:
            payments.apply_provider_word(uow, word)

    handle(TARGET, envelope, apply, rt)
