"""Payments: one per booking, and a card provider that follows the familiar test tokens.

`pm_card_visa` succeeds and `pm_card_chargeDeclined` is declined, as with
the usual provider's test cards; anything else is refused before any charge.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from shared.runtime.db import Row, Tx

_NAMESPACE = uuid.UUID("0b5e4a4c-3f7e-4c51-8a61-2d7c9b1f4e22")
TEST_CARDS = {"pm_card_visa": None, "pm_card_chargeDeclined": "card_declined"}


def payment_id_for(booking_id: uuid.UUID) -> uuid.UUID:
    """The payment's id follows from the booking's, so every path opens the same one."""
    return uuid.uuid5(_NAMESPACE, str(booking_id))


def open_payment_row(tx: Tx, booking_id: uuid.UUID) -> Row | None:
    """Make sure the booking's payment exists; returns it locked, or None without a booking.

    Whoever comes first opens it (the reaction to payment.requested, or the
    user paying right away). A booking that is no longer waiting gets a payment
    that is already cancelled, so it can never be charged.
    """
    booking = tx.one(
        "SELECT booking_id, user_id, status, amount_cents, currency FROM bookings"
        " WHERE booking_id = :b FOR SHARE", b=booking_id,
    )
    if booking is None or booking["amount_cents"] is None:
        return None
    # No conflict target: payment_id and booking_id are both unique, and two opens at
    # once must meet as a conflict on either, not as a unique violation on the other.
    tx.execute(
        "INSERT INTO payments (payment_id, booking_id, user_id, amount_cents, currency, status)"
        " VALUES (:p, :b, :u, :amount, :cur, :status) ON CONFLICT DO NOTHING",
        p=payment_id_for(booking_id), b=booking_id, u=booking["user_id"],
        amount=booking["amount_cents"], cur=booking["currency"],
        status="REQUIRES_PAYMENT" if booking["status"] == "AWAITING_PAYMENT" else "CANCELLED",
    )
    return tx.one("SELECT * FROM payments WHERE booking_id = :b FOR UPDATE", b=booking_id)


@dataclass(frozen=True)
class Charge:
    succeeded: bool
    charge_id: str
    decline_code: str | None


def is_known_method(method: str) -> bool:
    return method in TEST_CARDS


def charge(payment_id: uuid.UUID, amount_cents: int, currency: str, method: str) -> Charge:
    """Charge a test card; the charge id follows from the payment, so a retry is the same charge."""
    decline = TEST_CARDS[method]
    charge_id = "ch_" + uuid.uuid5(_NAMESPACE, f"charge/{payment_id}").hex[:24]
    return Charge(decline is None, charge_id, decline)
