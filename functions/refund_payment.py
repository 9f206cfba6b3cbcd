"""Money came for a booking that had closed: give it back at the provider.

The refund is asked for outside any transaction, with a key derived from the
payment (and looked up first, for a provider that ignores keys), so a
redelivery never refunds twice. The payment becomes REFUNDED, with
`payment.refunded`, only once the provider says the refund succeeded; a
pending one stays REFUNDING and the reconciler asks again.
"""

from __future__ import annotations

from typing import Any

from shared.domain import payments
from shared.domain.events import PaymentRefundRequested
from shared.runtime.bootstrap import Runtime
from shared.runtime.envelope import Envelope
from shared.runtime.reactions import effect, handle

TARGET = "refund_payment"


@effect(PaymentRefundRequested)
def refund_payment(envelope: Envelope[Any], rt: Runtime) -> None:
    event: PaymentRefundRequested = envelope.data
    with rt.db.transaction() as tx:
        payment = tx.one("SELECT * FROM payments WHERE payment_id = :p", p=event.payment_id)
    if payment is None or payment["status"] != "REFUNDING":
        handle(TARGET, envelope, lambda uow: None, rt)  # refunded already, or never asked
        return
    refund = payments.ask_refund(rt.provider, payment)
    handle(TARGET, envelope,
           lambda uow: payments.record_refund(uow, payment, refund, event.reason), rt)
