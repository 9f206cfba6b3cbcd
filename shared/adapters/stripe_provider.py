"""The payment provider: Stripe PaymentIntents and refunds, through the official SDK.

What the marketplace asks of a provider, and nothing more: make the intent of
a payment, confirm it with a card token, read it, cancel it, refund it. Every
call that makes or moves money carries an idempotency key derived from our
payment id (the SDK's own key is random per call), so a crash and a
redelivery never make a second intent or a second refund; where the embedded
fake ignores those keys (it does), a refund is looked up before it is made.

The SDK, slow to import, is imported on first use. The client has an
explicit timeout and two retries: its defaults (80 s, no retry) are wrong for
a function that must answer its delivery within seconds.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from shared.runtime.config import Settings
from shared.runtime.errors import TransientError

TIMEOUT_SECONDS = 8
NETWORK_RETRIES = 2
PROVIDER = "stripe"


class ProviderUnavailable(TransientError):
    """The provider did not answer, or answered that it cannot now: try again later."""


class UnknownPaymentMethod(ValueError):
    """The provider does not know the card token the client sent."""


class ProviderRefused(ValueError):
    """The provider refused the call for the state the intent is in (already canceled, say)."""


@dataclass(frozen=True)
class Intent:
    """A PaymentIntent as the provider has it now."""

    id: str
    status: str  # the provider's: requires_payment_method, processing, succeeded, canceled...
    amount: int
    currency: str  # upper case, as ours
    metadata: dict[str, str]
    client_secret: str | None = None
    charge_id: str | None = None
    decline_code: str | None = None


@dataclass(frozen=True)
class Refund:
    id: str
    status: str  # succeeded, pending, requires_action, failed, canceled


def intent_from(data: dict[str, Any]) -> Intent:
    """An intent from the provider's JSON (an API answer or a webhook's `data.object`)."""
    charge = data.get("latest_charge")
    charge_id = charge.get("id") if isinstance(charge, dict) else charge  # the fake expands it
    error = data.get("last_payment_error") or {}
    return Intent(
        id=str(data["id"]), status=str(data.get("status") or ""),
        amount=int(data.get("amount") or 0), currency=str(data.get("currency") or "").upper(),
        metadata={str(k): str(v) for k, v in (data.get("metadata") or {}).items()},
        client_secret=data.get("client_secret"), charge_id=charge_id,
        decline_code=(error.get("decline_code") or error.get("code")) if error else None,
    )


class StripeProvider:
    """One client per process, created on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                import stripe

                if not self.settings.stripe_api_key:
                    raise ProviderUnavailable("STRIPE_API_KEY is not set")
                options: dict[str, Any] = {}
                if self.settings.stripe_api_base:
                    options["base_addresses"] = {"api": self.settings.stripe_api_base}
                self._client = stripe.StripeClient(
                    self.settings.stripe_api_key, max_network_retries=NETWORK_RETRIES,
                    http_client=stripe.RequestsClient(timeout=TIMEOUT_SECONDS), **options)
            return self._client

    def _call(self, method: Any, *args: Any, with_method: bool = False, **kwargs: Any) -> Any:
        """One SDK call, its errors translated into ours.

        `with_method`: the call names the client's card token, so a missing
        resource is that token (the fake answers 404 where Stripe names the param).
        """
        import stripe

        try:
            return method(*args, **kwargs)
        except (stripe.APIConnectionError, stripe.RateLimitError) as exc:
            raise ProviderUnavailable(f"the payment provider is unreachable: {exc}") from exc
        except stripe.InvalidRequestError as exc:
            if exc.param == "payment_method" or (with_method and (
                    exc.code == "resource_missing" or exc.http_status == 404)):
                raise UnknownPaymentMethod(str(exc)) from exc
            raise ProviderRefused(str(exc)) from exc
        except stripe.CardError:
            raise  # a decline: the caller decides
        except stripe.StripeError as exc:
            if exc.http_status is None or exc.http_status >= 500:
                raise ProviderUnavailable(f"the payment provider failed: {exc}") from exc
            raise ProviderRefused(str(exc)) from exc

    def create_intent(self, payment_id: str, booking_id: str, amount: int, currency: str
                      ) -> Intent:
        """The payment's intent; the same payment always gets the same key, so one intent."""
        answer = self._call(
            self.client.v1.payment_intents.create,
            params={"amount": amount, "currency": currency.lower(),
                    "metadata": {"payment_id": payment_id, "booking_id": booking_id}},
            options={"idempotency_key": f"marketplace-intent-{payment_id}"})
        return intent_from(answer.to_dict())

    def confirm(self, intent_id: str, method: str) -> bool:
        """Confirm with a card token; False when the card was declined (the webhook says so)."""
        import stripe

        try:
            self._call(self.client.v1.payment_intents.confirm, intent_id,
                       params={"payment_method": method}, with_method=True)
        except stripe.CardError:
            return False
        return True

    def retrieve(self, intent_id: str) -> Intent:
        return intent_from(self._call(self.client.v1.payment_intents.retrieve,
                                      intent_id).to_dict())

    def cancel(self, intent_id: str) -> Intent:
        """Cancel the intent; returns it as it is now (succeeded, if the money came first)."""
        try:
            answer = self._call(self.client.v1.payment_intents.cancel, intent_id)
        except ProviderRefused:  # already canceled, or succeeded: ask what it is
            return self.retrieve(intent_id)
        return intent_from(answer.to_dict())

    def refund(self, intent_id: str, payment_id: str) -> Refund:
        """Refund the intent's money in full, once: an existing refund is returned instead."""
        existing = self._call(self.client.v1.refunds.list,
                              params={"payment_intent": intent_id, "limit": 10})
        for refund in existing.data:
            if refund.status not in {"failed", "canceled"}:
                return Refund(refund.id, refund.status)
        answer = self._call(self.client.v1.refunds.create,
                            params={"payment_intent": intent_id,
                                    "metadata": {"payment_id": payment_id}},
                            options={"idempotency_key": f"marketplace-refund-{payment_id}"})
        return Refund(answer.id, answer.status)
