"""What the local schedules ask before calling the relay, the sweeper and the reconciler.

Asked of PostgreSQL without calling the function (`due(db)` in each module):
True, work now; False, none now but some may come; None, nothing pending.
"""

from __future__ import annotations

import json
import uuid

from functions import reconcile_payments, relay_outbox, sweep_expired_holds
from shared.runtime.bootstrap import Runtime


def outbox_row(rt: Runtime, age_seconds: float, published: bool = False) -> None:
    with rt.db.transaction() as tx:
        tx.execute(
            "INSERT INTO outbox (event_id, topic, record_key, value, headers, created_at,"
            " published_at) VALUES (:id, 't', CAST('k' AS bytea), CAST('{}' AS bytea),"
            " CAST(:h AS jsonb),"
            " clock_timestamp() - make_interval(secs => :age),"
            " CASE WHEN :published THEN clock_timestamp() END)",
            id=str(uuid.uuid4()), h=json.dumps([]), age=age_seconds, published=published)


def booking(rt: Runtime, status: str, hold_in_seconds: float) -> None:
    with rt.db.transaction() as tx:
        tx.execute(
            "INSERT INTO bookings (booking_id, course_id, user_id, status, hold_expires_at)"
            " VALUES (:b, :c, :u, :s, now() + make_interval(secs => :t))",
            b=str(uuid.uuid4()), c=str(uuid.uuid4()), u=str(uuid.uuid4()), s=status,
            t=hold_in_seconds)


def test_the_relay_is_due_only_for_a_row_past_its_grace(rt: Runtime) -> None:
    assert relay_outbox.due(rt.db) is None
    outbox_row(rt, age_seconds=60, published=True)
    assert relay_outbox.due(rt.db) is None  # published: nothing to do
    outbox_row(rt, age_seconds=0)
    assert relay_outbox.due(rt.db) is False  # its request is publishing it: look again soon
    outbox_row(rt, age_seconds=relay_outbox.GRACE_SECONDS + 1)
    assert relay_outbox.due(rt.db) is True


def test_the_sweeper_is_due_only_for_a_hold_past_its_deadline(rt: Runtime) -> None:
    assert sweep_expired_holds.due(rt.db) is None
    booking(rt, "CONFIRMED", hold_in_seconds=-60)  # no hold any more
    assert sweep_expired_holds.due(rt.db) is None
    booking(rt, "AWAITING_PAYMENT", hold_in_seconds=600)
    assert sweep_expired_holds.due(rt.db) is False  # a hold is running
    booking(rt, "AWAITING_PAYMENT", hold_in_seconds=-1)
    assert sweep_expired_holds.due(rt.db) is True


def test_the_reconciler_asks_its_own_query_and_leaves_no_trace(rt: Runtime) -> None:
    """`due` runs the function's claiming query and rolls it back: the payment is not
    marked asked about, so the function's own call still finds it."""
    assert reconcile_payments.due(rt.db) is None
    payment = str(uuid.uuid4())
    with rt.db.transaction() as tx:
        tx.execute(
            "INSERT INTO payments (payment_id, booking_id, user_id, amount_cents, currency,"
            " status, provider_payment_id, updated_at) VALUES (:p, :b, :u, 1000, 'EUR',"
            " 'PROCESSING', 'pi_due', now() - make_interval(secs => :age))",
            p=payment, b=str(uuid.uuid4()), u=str(uuid.uuid4()),
            age=rt.settings.payment_reconcile_after_seconds + 5)
    assert reconcile_payments.due(rt.db) is True
    assert reconcile_payments.due(rt.db) is True  # asked twice: the first left no claim
    with rt.db.transaction() as tx:
        assert tx.scalar("SELECT reconciled_at FROM payments WHERE payment_id = :p",
                         p=payment) is None
