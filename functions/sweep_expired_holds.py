"""On a schedule: find holds past their deadline in PostgreSQL, for when Redis said nothing.

`due` tells the local schedule whether any hold is past its deadline, without
calling the function (usually none is: the watcher saw the expiry first).
"""

from __future__ import annotations

from shared.domain import holds
from shared.runtime.db import Database
from shared.runtime.reactions import scheduled
from shared.runtime.unit_of_work import Emitted, UnitOfWork

BATCH = 1000
_HELD = "FROM bookings WHERE status = 'AWAITING_PAYMENT'"
_OVERDUE = f"{_HELD} AND hold_expires_at <= now()"


@scheduled("* * * * *")
def sweep_expired_holds(uow: UnitOfWork) -> Emitted:
    overdue = uow.tx.all(
        f"SELECT booking_id, hold_expires_at, trace_context {_OVERDUE}"
        " ORDER BY hold_expires_at LIMIT :n",
        n=BATCH,
    )
    # Each expiry continues its booking's trace (the runtime adds this function's span there).
    return [holds.expiry_event(r["booking_id"], r["hold_expires_at"], "sweeper",
                               traceparent=r["trace_context"]) for r in overdue]


def due(db: Database) -> bool | None:
    """For the local schedule: True if a hold is past its deadline, False if holds are
    running (one may end), None if nothing is held. Probes of the partial index on
    held bookings."""
    with db.transaction() as tx:
        if tx.scalar(f"SELECT EXISTS (SELECT 1 {_OVERDUE})"):
            return True
        return False if tx.scalar(f"SELECT EXISTS (SELECT 1 {_HELD})") else None
