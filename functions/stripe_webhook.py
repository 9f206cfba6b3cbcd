"""The payment provider's word: Stripe's signed webhook at `POST /webhooks/stripe`.

Believed only when signed (`shared.edge.webhook_signature`), recorded once by
the provider's event id (Stripe delivers at least once and in no order), and
applied through `payments.apply_provider_word`, the reconciler's path too:
the payment moves forward only and its event is written to the outbox in the
same transaction. No provider call happens here, so the answer is quick; an
event type we do not act on is answered 200 and ignored, as the provider
expects. Nothing of the body is logged: it carries the client secret.
"""

from __future__ import annotations

import json
import time
from typing import Any

import flask
from pydantic import BaseModel

from shared.adapters.stripe_provider import intent_from
from shared.domain import payments
from shared.edge import webhook_signature
from shared.edge.api import Api, Problem, Reply, read_body
from shared.runtime.bootstrap import runtime
from shared.runtime.unit_of_work import unit_of_work

api = Api()
SOURCE = "/marketplace/functions/stripe-webhook"
MAX_BODY_BYTES = 256 * 1024  # Stripe's events are a few KiB
INTENT_EVENTS = frozenset({"payment_intent.succeeded", "payment_intent.payment_failed",
                           "payment_intent.canceled"})


class Received(BaseModel):
    received: bool
    outcome: str


def _event_of(payload: bytes) -> dict[str, Any]:
    try:
        event = json.loads(payload)
    except (ValueError, RecursionError):
        event = None
    if not isinstance(event, dict) or not all(
            isinstance(event.get(k), str) and "\x00" not in event[k] for k in ("id", "type")):
        raise Problem(400, "Bad Request", "the body is not a provider event")
    return event


@api.route("POST", "/webhooks/stripe", raw_body=("application/json",), errors=(400, 413))
def receive_stripe_event(raw: flask.Request) -> Reply[Received]:
    """The provider's signed event: a payment succeeded or failed (other types are ignored)."""
    payload = read_body(raw, MAX_BODY_BYTES)
    settings = runtime().settings
    if not webhook_signature.is_signed(payload, raw.headers.get("Stripe-Signature"),
                                       settings.stripe_webhook_secrets, time.time()):
        raise Problem(400, "Bad Request", "the webhook signature is missing, wrong or stale")
    event = _event_of(payload)
    with unit_of_work(SOURCE) as uow:
        fresh = uow.tx.execute(
            "INSERT INTO provider_events (event_id, event_type) VALUES (:id, :t)"
            " ON CONFLICT DO NOTHING", id=event["id"], t=event["type"])
        if not fresh:
            return {"received": True, "outcome": "duplicate"}
        if event["type"] not in INTENT_EVENTS:
            return {"received": True, "outcome": "ignored"}
        try:
            intent = intent_from(event["data"]["object"])
        except (KeyError, TypeError, ValueError) as exc:
            raise Problem(400, "Bad Request", "the event carries no payment intent") from exc
        outcome = payments.apply_provider_word(uow, payments.word_of(intent))
    return {"received": True, "outcome": outcome}


stripe_webhook = api.function("/webhooks/stripe")
