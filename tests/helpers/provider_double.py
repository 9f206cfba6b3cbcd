"""An in-process payment provider behind `StripeProvider`'s interface (the model, the saga tests).

Chosen over the embedded fake Stripe because the model must replay a seed exactly:
the fake sends its webhooks from another process whenever it gets round to it,
and each of its calls is an HTTP round trip. This one decides at once, and keeps
the webhooks it would have sent, signed, for the model to deliver late, twice,
out of order or never (tests/integration/test_payments.py covers the real fake).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import stripe

from shared.adapters.stripe_provider import Intent, ProviderRefused, Refund, intent_from

SECRET = "whsec_verify_" + "v" * 24


@dataclass
class Webhook:
    number: int
    type: str
    intent: str
    body: bytes

    def signature(self) -> str:
        return str(stripe.WebhookSignature.generate_signature_header(self.body.decode(), SECRET))


@dataclass
class ProviderDouble:
    intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, Refund] = field(default_factory=dict)
    webhooks: list[Webhook] = field(default_factory=list)
    by_key: dict[str, str] = field(default_factory=dict)

    def _send(self, type_: str, data: dict[str, Any]) -> None:
        number = len(self.webhooks) + 1
        body = json.dumps({"id": f"evt_{number}", "type": type_,
                           "data": {"object": dict(data)}}).encode()
        self.webhooks.append(Webhook(number, type_, data["id"], body))

    def create_intent(self, payment_id: str, booking_id: str, amount: int, currency: str
                      ) -> Intent:
        if payment_id in self.by_key:  # the idempotency key
            return intent_from(self.intents[self.by_key[payment_id]])
        intent_id = f"pi_{len(self.intents) + 1}"
        self.intents[intent_id] = {
            "id": intent_id, "status": "requires_payment_method", "amount": amount,
            "currency": currency.lower(), "client_secret": f"{intent_id}_secret",
            "metadata": {"payment_id": payment_id, "booking_id": booking_id}}
        self.by_key[payment_id] = intent_id
        return intent_from(self.intents[intent_id])

    def confirm(self, intent_id: str, method: str) -> bool:
        intent = self.intents[intent_id]
        if intent["status"] in {"succeeded", "canceled"}:
            raise ProviderRefused(f"intent {intent_id} is {intent['status']}")
        if method == "pm_card_visa":
            intent.update(status="succeeded", latest_charge=f"ch_{intent_id}",
                          last_payment_error=None)
            self._send("payment_intent.succeeded", intent)
            return True
        intent.update(status="requires_payment_method",
                      last_payment_error={"decline_code": "generic_decline"})
        self._send("payment_intent.payment_failed", intent)
        return False

    def retrieve(self, intent_id: str) -> Intent:
        return intent_from(self.intents[intent_id])

    def cancel(self, intent_id: str) -> Intent:
        intent = self.intents[intent_id]
        if intent["status"] not in {"succeeded", "canceled"}:
            intent["status"] = "canceled"
            self._send("payment_intent.canceled", intent)
        return intent_from(intent)

    def refund(self, intent_id: str, payment_id: str) -> Refund:
        if intent_id not in self.refunds:
            self.refunds[intent_id] = Refund(f"re_{intent_id}", "succeeded")
        return self.refunds[intent_id]

    def received(self) -> int:
        """Money taken minus money given back."""
        taken = sum(int(i["amount"]) for i in self.intents.values()
                    if i["status"] == "succeeded")
        return taken - sum(int(self.intents[i]["amount"]) for i in self.refunds)
