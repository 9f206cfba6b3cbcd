"""On a schedule: ask the provider about payments still waiting for its word, for lost webhooks.

A webhook can be lost (the provider retries for days, the embedded fake never);
this makes a lost one cost latency, never money. Every payment that has waited
longer than `PAYMENT_RECONCILE_AFTER_SECONDS` since it last moved (or was last
asked about) is read from the provider and what it says is applied through the
webhook's own code path (`payments.apply_provider_word`):

* REQUIRES_PAYMENT or PROCESSING with an intent: did it succeed or fail?
* CANCELLED whose intent was not yet seen cancelled: cancel it again, and
  learn whether the money came first (then it is refunded);
* REFUNDING: ask for the refund again (it is made once) and record it.

Provider calls happen between short transactions, one payment at a time, and
a payment the provider cannot answer about now is asked again next time.

`due` tells the local schedule whether any payment is waiting that long,
without calling the function.
"""

from __future__ import annotations

import logging

from shared.adapters.stripe_provider import ProviderRefused, ProviderUnavailable
from shared.domain import payments
from shared.domain.payments import Payment, PaymentStatus
from shared.runtime.bootstrap import Runtime
from shared.runtime.config import settings
from shared.runtime.db import Database
from shared.runtime.reactions import scheduled_effect, source_of
from shared.runtime.unit_of_work import unit_of_work

log = logging.getLogger("marketplace.reconcile")
BATCH = 100
SOURCE = source_of("reconcile_payments")


@scheduled_effect("* * * * *", every="payment_reconcile_interval_seconds")
def reconcile_payments(rt: Runtime) -> None:
    with rt.db.transaction() as tx:
        waiting = payments.due_for_reconciling(tx, rt.settings.payment_reconcile_after_seconds,
                                               BATCH)
    for payment in waiting:
        try:
            reconcile(rt, payment)
        except ProviderUnavailable as exc:
            log.warning("the provider cannot say about payment %s now: %s",
                        payment.payment_id, exc)
            return  # the rest next time
        except ProviderRefused as exc:  # it does not know the intent: a person must look
            log.error("the provider refused to say about payment %s: %s",
                      payment.payment_id, exc)


class _Undo(Exception):
    """Rolls back `due`'s claim: the question must not change what it asks about."""


def due(db: Database) -> bool | None:
    """For the local schedule: True if a payment has waited long enough to ask about,
    None if none has (the next look backs off; a new payment rings the doorbell).

    The function's own query, in a transaction rolled back: the same condition,
    with no second copy of it to drift (nothing is written when nothing is due).
    """
    try:
        with db.transaction() as tx:
            found = payments.due_for_reconciling(
                tx, settings().payment_reconcile_after_seconds, 1)
            raise _Undo(bool(found))
    except _Undo as undo:
        return True if undo.args[0] else None


def reconcile(rt: Runtime, payment: Payment) -> None:
    """Bring one payment up to what the provider says."""
    provider = rt.provider
    if payment.status is PaymentStatus.REFUNDING:
        with rt.db.transaction() as tx:
            claimed = payments.claim_refund(tx, payment.payment_id)
        if claimed is None:
            return  # refund_payment is asking right now
        refund = payments.ask_refund(provider, claimed)
        with unit_of_work(SOURCE, rt) as uow:
            booking = uow.tx.one("SELECT status FROM bookings WHERE booking_id = :b",
                                 b=payment.booking_id)
            payments.record_refund(uow, payment, refund,
                                   payments.refund_reason(booking["status"] if booking else ""))
        return
    intent_id = payment.provider_payment_id
    assert intent_id is not None  # only a payment with an intent is waiting for its word
    if payment.status is PaymentStatus.CANCELLED:
        intent = provider.cancel(intent_id)
    else:
        intent = provider.retrieve(intent_id)
    with unit_of_work(SOURCE, rt) as uow:
        outcome = payments.apply_provider_word(uow, payments.word_of(intent))
    if outcome not in {"pending", "unchanged"}:
        log.info("payment %s reconciled: %s", payment.payment_id, outcome)
