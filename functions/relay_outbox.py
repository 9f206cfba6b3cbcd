"""On a schedule: publish outbox rows that a crash left unpublished, and forget old ones.

`due` tells the local schedule whether there is anything to publish, without
calling the function: the request path publishes its own rows, so the relay
has work only after a failed send or a crash.
"""

from __future__ import annotations

from shared.runtime import outbox
from shared.runtime.db import Database
from shared.runtime.reactions import scheduled
from shared.runtime.unit_of_work import Emitted, UnitOfWork

# Rows younger than this are still being published by the request that wrote them.
GRACE_SECONDS = 2.0


@scheduled("* * * * *")
def relay_outbox(uow: UnitOfWork) -> Emitted:
    if uow.rt.publisher is not None:
        while outbox.publish(uow.rt.db, uow.rt.publisher, older_than_seconds=GRACE_SECONDS):
            pass
    outbox.prune(uow.rt.db)
    return None


def due(db: Database) -> bool | None:
    """For the local schedule: True if a row past its grace period is unpublished, False if
    only younger ones are (they may be left behind), None if every row is published."""
    if outbox.waiting(db, older_than_seconds=GRACE_SECONDS):
        return True
    return False if outbox.waiting(db) else None
