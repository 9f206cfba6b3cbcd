"""Money came for a booking that had closed: give it back at the provider.

The refund is asked for outside any transaction, by one asker at a time (a
lease on the payment row), with a key derived from the payment and looked up
first (for a provider that ignores keys), so neither a redelivery nor the
reconciler running at the same moment ever refunds twice. An event that finds
the lease taken leaves the refund to its holder (or, if that one crashed, to
the reconciler once the lease has run out). The payment becomes REFUNDED, with
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
        payment = payments.claim_refund(tx, event.payment_id)
    if payment is None:  # refunded already, being refunded by another, or never asked
        handle(TARGET, envelope, lambda uow: None, rt)
        return
    refund = payments.ask_refund(rt.provider, payment)
    handle(TARGET, envelope,
           lambda uow: payments.record_refund(uow, payment, refund, event.reason), rt)
