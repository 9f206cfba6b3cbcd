"""On a schedule: publish outbox rows that a crash left unpublished, and forget old ones."""

from __future__ import annotations

from shared.runtime import outbox
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
