"""On a schedule: find holds past their deadline in PostgreSQL, for when Redis said nothing."""

from __future__ import annotations

from shared.domain import holds
from shared.runtime.reactions import scheduled
from shared.runtime.unit_of_work import Emitted, UnitOfWork

BATCH = 1000


@scheduled("* * * * *")
def sweep_expired_holds(uow: UnitOfWork) -> Emitted:
    overdue = uow.tx.all(
        "SELECT booking_id, hold_expires_at, trace_context FROM bookings"
        " WHERE status = 'AWAITING_PAYMENT' AND hold_expires_at <= now()"
        " ORDER BY hold_expires_at LIMIT :n",
        n=BATCH,
    )
    # Each expiry continues its booking's trace (the runtime adds this function's span there).
    return [holds.expiry_event(r["booking_id"], r["hold_expires_at"], "sweeper",
                               traceparent=r["trace_context"]) for r in overdue]
