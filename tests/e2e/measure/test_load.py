"""The load generator (local.measure.load) on the e2e stack: each behaviour ends as it must."""

from __future__ import annotations

from local.measure import load
from local.measure.sessions import SessionSettings
from tests.helpers.marketplace import HOLD_TTL_SECONDS, Marketplace


def test_each_behaviour_ends_as_expected(marketplace: Marketplace) -> None:
    url = marketplace.url
    users = load.register_users(url, 12)  # one session each: one live booking per user
    course = marketplace.publish(capacity=40)["course_id"]
    behaviours = sorted(load.BEHAVIOURS)
    # 12 arrivals, the mix interleaved in its exact shares: each behaviour twice
    profile = load.Profile(rate=2, duration=6, mix=dict.fromkeys(behaviours, 1.0),
                           session=SessionSettings(expiry_grace=HOLD_TTL_SECONDS + 30))
    result = load.run(load.Target(url, users, [course]), profile)

    assert set(result.by_behaviour()) == set(behaviours), result.summary()
    assert result.unexpected() == [], result.summary()
    assert result.failed_attempts() == []  # nothing failed, so nothing was retried
    assert result.late_starts() == 0 and result.cpu_seconds > 0
    for session in result.sessions:
        assert session.requested <= (session.held or 0) <= (session.final or 0)
        if session.behaviour == "retry_post":
            assert session.second_booking_id == session.booking_id
        if session.behaviour == "late_pay":
            assert session.pay_status == 409
            assert session.pay_sent is not None and session.hold_expires_at is not None
            assert session.pay_sent > session.hold_expires_at
    # what the clients saw is what the database holds, one booking per session
    db = marketplace.stack.runtime.db if marketplace.stack.runtime else None
    assert db is not None
    with db.transaction() as tx:
        rows = tx.all("SELECT booking_id::text AS id, status, reason FROM bookings"
                      " WHERE course_id = CAST(:c AS uuid)", c=course)
    stored = {r["id"]: (r["status"], r["reason"]) for r in rows}
    assert stored == {s.booking_id: (s.final_status, s.final_reason) for s in result.sessions}
