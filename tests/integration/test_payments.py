"""Paying through the provider: each function against real PostgreSQL, Redis and the fake Stripe.

The fake sends its signed webhooks to a recorder in this process; a test then
delivers each one to `stripe_webhook` itself, so it can deliver them late,
twice, out of order, or never (and let the reconciler find out).
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import stripe

from functions import reconcile_payments
from local.stack import embedded
from shared.domain import payments
from shared.domain.payments import payment_id_for
from shared.edge import tokens
from shared.runtime.bootstrap import Runtime
from tests.helpers.events import BOOKING, COURSE, USER, app, fixture, post
from tests.helpers.listeners import Listener, Received
from tests.helpers.ports import free_port
from tests.helpers.rows import outbox, row, scalar, seed_course
from tests.helpers.saga import SagaDriver
from tests.helpers.servers import start_or_exit

SECRET = "whsec_test_" + "s" * 24
PAYMENT = payment_id_for(BOOKING)


@dataclasses.dataclass
class Webhook:
    type: str
    intent: str
    body: bytes
    signature: str


def webhook(request: Received) -> Webhook:
    event = json.loads(request.body)
    return Webhook(event["type"], event["data"]["object"]["id"], request.body,
                   request.headers["Stripe-Signature"])


class WebhookRecorder(Listener):
    """Where the fake posts its webhooks: kept for the test to deliver as it likes."""

    def webhook(self, type_: str, intent: str, timeout: float = 10) -> Webhook:
        """The first webhook of this type for this intent, once the fake has sent it."""
        def wanted(request: Received) -> bool:
            hook = webhook(request)
            return (hook.type, hook.intent) == (type_, intent)

        return webhook(self.wait(wanted, timeout, what=f"a {type_} webhook for {intent}"))


@pytest.fixture(scope="session")
def fake_stripe(workdir: Path) -> Iterator[tuple[str, WebhookRecorder]]:
    with WebhookRecorder() as recorder:
        server = start_or_exit(lambda: embedded.start_payments(workdir, recorder.url + "/",
                                                               SECRET))
        yield server.url, recorder
        server.stop()


@pytest.fixture
def paying(rt: Runtime, fake_stripe: tuple[str, WebhookRecorder]) -> WebhookRecorder:
    """The runtime pointed at the fake provider; returns where its webhooks arrive."""
    url, recorder = fake_stripe
    rt.settings = dataclasses.replace(rt.settings, stripe_api_base=url,
                                      stripe_api_key="sk_test_fake",
                                      stripe_webhook_secrets=("whsec_old_" + "o" * 24, SECRET),
                                      payment_reconcile_after_seconds=0)
    rt._provider = None
    recorder.clear()
    return recorder


def provider(rt: Runtime) -> Any:
    return rt.provider.client


def awaiting_payment(rt: Runtime, price_cents: int = 4900) -> None:
    seed_course(rt, capacity=2, price_cents=price_cents)
    with rt.db.transaction() as tx:
        ticket = tx.scalar("SELECT ticket_id FROM tickets LIMIT 1")
        tx.execute("UPDATE tickets SET status = 'RESERVED', booking_id = :b WHERE ticket_id = :t",
                   b=BOOKING, t=ticket)
        tx.execute("INSERT INTO bookings (booking_id, course_id, user_id, ticket_id, status,"
                   " amount_cents, currency, hold_expires_at) VALUES (:b, :c, :u, :t,"
                   " 'AWAITING_PAYMENT', :p, 'EUR', :h)", b=BOOKING, c=COURSE, u=USER, t=ticket,
                   p=price_cents, h=datetime.now(UTC) + timedelta(minutes=10))


def pay(method: str | None = "pm_card_visa", key: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {tokens.issue_access(USER, 'user', uuid.uuid4())}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    body = {} if method is None else {"payment_method": method}
    return app("bookings").test_client().post(f"/bookings/{BOOKING}/payment", json=body,
                                              headers=headers)


def deliver(hook: Webhook, signature: str | None = None) -> Any:
    return app("stripe_webhook").test_client().post(
        "/webhooks/stripe", data=hook.body,
        headers={"Content-Type": "application/json",
                 "Stripe-Signature": hook.signature if signature is None else signature})


def payment(rt: Runtime) -> dict[str, Any]:
    found = row(rt, "SELECT * FROM payments WHERE payment_id = :p", p=PAYMENT)
    assert found is not None
    return dict(found)


def booking_status(rt: Runtime) -> str:
    return str(scalar(rt, "SELECT status FROM bookings WHERE booking_id = :b", b=BOOKING))


@pytest.fixture
def saga(rt: Runtime) -> SagaDriver:
    """The broker's part: what the functions emit reaches the payment reactions through it."""
    return SagaDriver(rt, targets={"settle_booking", "refund_payment"})


def test_a_card_that_pays_confirms_the_booking_through_the_webhook(
        rt: Runtime, paying: WebhookRecorder, saga: SagaDriver) -> None:
    awaiting_payment(rt)
    answer = pay()
    assert answer.status_code == 202, answer.data
    body = answer.get_json()
    assert body["status"] == "PROCESSING" and body["provider"] == "stripe"
    assert body["provider_payment_id"].startswith("pi_") and body["client_secret"]
    intent = provider(rt).v1.payment_intents.retrieve(body["provider_payment_id"])
    assert (intent.amount, intent.currency) == (4900, "eur")
    assert intent.metadata.to_dict() == {"payment_id": str(PAYMENT), "booking_id": str(BOOKING)}
    assert booking_status(rt) == "AWAITING_PAYMENT"  # the answer settles nothing
    assert outbox(rt, "payment.succeeded") == []

    hook = paying.webhook("payment_intent.succeeded", body["provider_payment_id"])
    assert deliver(hook).get_json() == {"received": True, "outcome": "succeeded"}
    assert payment(rt)["status"] == "SUCCEEDED"
    assert saga.deliver_topic("payment.succeeded") == [200]
    assert booking_status(rt) == "CONFIRMED"


def test_a_declined_card_cancels_the_booking(
        rt: Runtime, paying: WebhookRecorder, saga: SagaDriver) -> None:
    awaiting_payment(rt)
    answer = pay("pm_card_chargeDeclined")
    assert answer.status_code == 202
    hook = paying.webhook("payment_intent.payment_failed", answer.get_json()["provider_payment_id"])
    assert deliver(hook).get_json()["outcome"] == "failed"
    assert payment(rt)["status"] == "FAILED"
    assert saga.deliver_topic("payment.failed") == [200]
    assert booking_status(rt) == "CANCELLED"


def test_a_token_the_provider_does_not_know_is_a_400_naming_it(
        rt: Runtime, paying: WebhookRecorder) -> None:
    awaiting_payment(rt)
    answer = pay("pm_card_nonsense")
    assert answer.status_code == 400
    assert answer.get_json()["errors"][0]["field"] == "payment_method"
    assert payment(rt)["status"] == "REQUIRES_PAYMENT"
    assert booking_status(rt) == "AWAITING_PAYMENT"


def test_the_client_can_confirm_with_the_client_secret(
        rt: Runtime, paying: WebhookRecorder) -> None:
    awaiting_payment(rt)
    answer = pay(method=None)
    assert answer.status_code == 202
    body = answer.get_json()
    assert body["status"] == "REQUIRES_PAYMENT" and body["client_secret"].startswith(
        body["provider_payment_id"])
    # What Stripe.js does in the browser: confirm the intent at the provider.
    intent_id = body["provider_payment_id"]
    provider(rt).v1.payment_intents.update(intent_id, params={"payment_method": "pm_card_visa"})
    provider(rt).v1.payment_intents.confirm(intent_id)
    deliver(paying.webhook("payment_intent.succeeded", intent_id))
    assert payment(rt)["status"] == "SUCCEEDED"
    # Asking again returns the same intent.
    assert pay(method=None).status_code == 409
    assert scalar(rt, "SELECT count(*) FROM payments") == 1


@pytest.mark.parametrize("closing", ["booking.cancelled", "booking.expired"])
def test_a_closed_booking_cancels_its_intent_at_the_provider(
        rt: Runtime, paying: WebhookRecorder, closing: str) -> None:
    awaiting_payment(rt)
    intent_id = pay(method=None).get_json()["provider_payment_id"]
    event = fixture(closing, ticket_id=str(uuid.uuid4()))
    for _ in range(2):
        assert post("cancel_open_payment", event).status_code == 200
    assert provider(rt).v1.payment_intents.retrieve(intent_id).status == "canceled"
    closed = payment(rt)
    assert closed["status"] == "CANCELLED" and closed["intent_cancelled_at"] is not None


def test_money_that_comes_after_the_hold_is_refunded_at_the_provider(
        rt: Runtime, paying: WebhookRecorder, saga: SagaDriver) -> None:
    awaiting_payment(rt)
    intent_id = pay().get_json()["provider_payment_id"]  # paid at the provider...
    with rt.db.transaction() as tx:  # ...but the hold ran out before its webhook came
        tx.execute("UPDATE bookings SET status = 'EXPIRED' WHERE booking_id = :b", b=BOOKING)
    assert post("cancel_open_payment", fixture("booking.expired")).status_code == 200
    assert payment(rt)["status"] == "SUCCEEDED"  # the cancel learnt the money had come
    assert saga.deliver_topic("payment.succeeded") == [200]
    assert payment(rt)["status"] == "REFUNDING"
    assert saga.deliver_topic("payment.refund_requested") == [200]
    assert saga.redeliver_topic("payment.refund_requested") == [200]
    refunded = payment(rt)
    assert refunded["status"] == "REFUNDED"
    refunds = provider(rt).v1.refunds.list(params={"payment_intent": intent_id}).data
    assert [(r.status, r.amount, r.id) for r in refunds] == [
        ("succeeded", 4900, refunded["refund_id"])]
    [event] = outbox(rt, "payment.refunded")
    assert event["data"]["reason"] == "booking_expired"
    # The webhook that comes late changes nothing more.
    assert deliver(paying.webhook("payment_intent.succeeded", intent_id)).get_json()[
        "outcome"] == "unchanged"
    assert booking_status(rt) == "EXPIRED"


def test_a_duplicate_webhook_is_200_and_changes_nothing(
        rt: Runtime, paying: WebhookRecorder) -> None:
    awaiting_payment(rt)
    hook = paying.webhook("payment_intent.succeeded", pay().get_json()["provider_payment_id"])
    assert deliver(hook).status_code == 200
    again = deliver(hook)
    assert again.status_code == 200 and again.get_json()["outcome"] == "duplicate"
    assert len(outbox(rt, "payment.succeeded")) == 1


def signed(event: dict[str, Any]) -> Webhook:
    """A webhook as the provider signs one (for what the fake never sends)."""
    body = json.dumps(event).encode()
    signature = stripe.WebhookSignature.generate_signature_header(body.decode(), SECRET)
    return Webhook(event["type"], event["data"]["object"]["id"], body, signature)


def test_a_failure_that_arrives_after_the_success_moves_nothing_back(
        rt: Runtime, paying: WebhookRecorder) -> None:
    awaiting_payment(rt)
    intent_id = pay().get_json()["provider_payment_id"]
    succeeded = paying.webhook("payment_intent.succeeded", intent_id)
    # An earlier attempt's failure, delivered after the success (no order is promised).
    event = json.loads(succeeded.body)
    event["id"], event["type"] = "evt_earlier_failure", "payment_intent.payment_failed"
    event["data"]["object"].update(status="requires_payment_method",
                                   last_payment_error={"code": "card_declined"})
    assert deliver(succeeded).get_json()["outcome"] == "succeeded"
    assert deliver(signed(event)).get_json()["outcome"] == "unchanged"
    assert payment(rt)["status"] == "SUCCEEDED"
    assert outbox(rt, "payment.failed") == []


def test_a_webhook_for_our_intent_with_another_amount_changes_nothing(
        rt: Runtime, paying: WebhookRecorder) -> None:
    awaiting_payment(rt)
    intent_id = pay().get_json()["provider_payment_id"]
    event = json.loads(paying.webhook("payment_intent.succeeded", intent_id).body)
    event["id"] = "evt_other_amount"
    event["data"]["object"]["amount"] = 1
    assert deliver(signed(event)).get_json()["outcome"] == "mismatch"
    assert payment(rt)["status"] == "PROCESSING"


def test_a_webhook_for_an_intent_we_did_not_make_changes_nothing(
        rt: Runtime, paying: WebhookRecorder) -> None:
    awaiting_payment(rt)
    pay(method=None)
    stranger = provider(rt).v1.payment_intents.create(params={
        "amount": 4900, "currency": "eur", "payment_method": "pm_card_visa",
        "metadata": {"payment_id": str(uuid.uuid4())}})
    provider(rt).v1.payment_intents.confirm(stranger.id)
    answer = deliver(paying.webhook("payment_intent.succeeded", stranger.id))
    assert answer.status_code == 200 and answer.get_json()["outcome"] == "not_ours"
    assert payment(rt)["status"] == "REQUIRES_PAYMENT" and outbox(rt, "payment.succeeded") == []


@pytest.mark.parametrize("signature", ["", "t=1,v1=00", "garbage"])
def test_a_bad_signature_is_a_400_and_records_nothing(
        rt: Runtime, paying: WebhookRecorder, signature: str) -> None:
    awaiting_payment(rt)
    hook = paying.webhook("payment_intent.succeeded", pay().get_json()["provider_payment_id"])
    answer = deliver(hook, signature=signature)
    assert answer.status_code == 400 and answer.mimetype == "application/problem+json"
    assert "signature" in answer.get_json()["detail"]
    assert scalar(rt, "SELECT count(*) FROM provider_events") == 0
    assert payment(rt)["status"] == "PROCESSING"


def test_a_lost_webhook_is_found_by_the_reconciler(
        rt: Runtime, paying: WebhookRecorder, saga: SagaDriver) -> None:
    awaiting_payment(rt)
    pay()  # its webhook is never delivered
    assert payment(rt)["status"] == "PROCESSING"
    reconcile_payments.reconcile_payments.handler(rt)  # type: ignore[attr-defined]
    assert payment(rt)["status"] == "SUCCEEDED"
    assert saga.deliver_topic("payment.succeeded") == [200]
    assert booking_status(rt) == "CONFIRMED"
    reconcile_payments.reconcile_payments.handler(rt)  # type: ignore[attr-defined]
    assert len(outbox(rt, "payment.succeeded")) == 1


def test_a_forged_payment_succeeded_confirms_nothing(rt: Runtime, paying: WebhookRecorder
                                                      ) -> None:
    awaiting_payment(rt)
    pay(method=None)  # a payment exists, but nobody paid it
    forged = fixture("payment.succeeded", payment_id=PAYMENT)
    answer = post("settle_booking", forged)
    assert answer.status_code == 422 and b"not believed" in answer.data
    assert booking_status(rt) == "AWAITING_PAYMENT"
    assert outbox(rt, "booking.confirmed") == []
    assert scalar(rt, "SELECT count(*) FROM inbox WHERE consumer = 'settle_booking'") == 0


def test_the_provider_down_is_a_503_and_changes_nothing(rt: Runtime, paying: WebhookRecorder
                                                         ) -> None:
    awaiting_payment(rt)
    rt.settings = dataclasses.replace(rt.settings, stripe_api_base=f"http://127.0.0.1:{_closed_port()}")
    rt._provider = None
    answer = pay()
    assert answer.status_code == 503 and answer.headers["Retry-After"]
    assert booking_status(rt) == "AWAITING_PAYMENT"
    assert payment(rt)["provider_payment_id"] is None


def test_a_free_course_never_reaches_the_provider(
        rt: Runtime, paying: WebhookRecorder, saga: SagaDriver) -> None:
    awaiting_payment(rt, price_cents=0)
    rt.settings = dataclasses.replace(rt.settings, stripe_api_base=f"http://127.0.0.1:{_closed_port()}")
    rt._provider = None
    answer = pay()
    assert answer.status_code == 202 and answer.get_json()["status"] == "SUCCEEDED"
    assert answer.get_json()["provider"] == "none"
    assert saga.deliver_topic("payment.succeeded") == [200]
    assert booking_status(rt) == "CONFIRMED"


def test_a_retried_payment_with_its_key_gets_the_first_answer(
        rt: Runtime, paying: WebhookRecorder) -> None:
    awaiting_payment(rt)
    first = pay(key="pay-1")
    again = pay(key="pay-1")
    assert (first.status_code, again.status_code) == (202, 202)
    assert first.get_json() == again.get_json()
    assert pay(key="pay-1", method="pm_card_chargeDeclined").status_code == 422  # other body
    assert pay().status_code == 409  # without the key: it is paid already
    intents = provider(rt).v1.payment_intents.list(params={"limit": 100}).data
    assert [i.id for i in intents].count(first.get_json()["provider_payment_id"]) == 1


def test_a_retried_cancel_with_its_key_gets_the_first_answer(
        rt: Runtime, paying: WebhookRecorder) -> None:
    awaiting_payment(rt)
    headers = {"Authorization": f"Bearer {tokens.issue_access(USER, 'user', uuid.uuid4())}",
               "Idempotency-Key": "cancel-1"}
    client = app("bookings").test_client()
    answers = [client.post(f"/bookings/{BOOKING}/cancel", headers=headers) for _ in range(2)]
    assert [a.status_code for a in answers] == [202, 202]
    assert len(outbox(rt, "booking.cancelled")) == 1
    del headers["Idempotency-Key"]
    assert client.post(f"/bookings/{BOOKING}/cancel", headers=headers).status_code == 409


def _closed_port() -> int:
    return free_port()  # nobody listens on it



def test_one_asker_at_a_time_refunds_so_nothing_is_refunded_twice(
        rt: Runtime, paying: WebhookRecorder, saga: SagaDriver) -> None:
    """refund_payment and the reconciler at once (the fake ignores idempotency keys: a chaos
    run at 20/s refunded one payment twice before the lease)."""
    awaiting_payment(rt)
    intent_id = pay().get_json()["provider_payment_id"]
    with rt.db.transaction() as tx:
        tx.execute("UPDATE bookings SET status = 'EXPIRED' WHERE booking_id = :b", b=BOOKING)
    post("cancel_open_payment", fixture("booking.expired"))
    assert saga.deliver_topic("payment.succeeded") == [200]
    with rt.db.transaction() as tx:  # another asker is at the provider right now...
        assert payments.claim_refund(tx, PAYMENT) is not None
        assert payments.claim_refund(tx, PAYMENT) is None
    assert saga.deliver_topic("payment.refund_requested") == [200]  # ...so not this
    reconcile_payments.reconcile_payments.handler(rt)  # type: ignore[attr-defined]
    assert payment(rt)["status"] == "REFUNDING"
    assert provider(rt).v1.refunds.list(params={"payment_intent": intent_id}).data == []
    with rt.db.transaction() as tx:  # ...and crashed: its lease runs out
        tx.execute("UPDATE payments SET refund_lease_until = now() - interval '1 second'")
    reconcile_payments.reconcile_payments.handler(rt)  # type: ignore[attr-defined]
    assert payment(rt)["status"] == "REFUNDED"
    assert len(provider(rt).v1.refunds.list(params={"payment_intent": intent_id}).data) == 1
    assert len(outbox(rt, "payment.refunded")) == 1
