"""Every event on every topic becomes a document in the analytics index.

The document id is the CloudEvent id, so a redelivery overwrites the same
document and no figure counts it twice; no inbox is needed. Events that name
only their booking (payments, expiries) get its course and user from
`bookings`, so every figure can be split per course. Deliveries are unordered
(order does not matter to an index) and concurrent ones share one `_bulk` call.
"""

from __future__ import annotations

from typing import Any

from shared.adapters import search
from shared.domain.events import REGISTRY, Event
from shared.runtime.bootstrap import Runtime, runtime
from shared.runtime.envelope import Envelope, PoisonEvent
from shared.runtime.errors import TransientError
from shared.runtime.reactions import effect


def enrich(docs: list[dict[str, Any]]) -> None:
    """Add course_id and user_id from `bookings` where the event names only the booking."""
    wanted = sorted({d["booking_id"] for d in docs
                     if d.get("booking_id") and not (d.get("course_id") and d.get("user_id"))})
    if not wanted:
        return
    with runtime().db.transaction() as tx:
        rows = tx.all("SELECT booking_id, course_id, user_id FROM bookings"
                      " WHERE booking_id = ANY(CAST(:ids AS uuid[]))", ids=wanted)
    known = {str(r["booking_id"]): r for r in rows}
    for doc in docs:
        row = known.get(doc.get("booking_id", ""))
        if row is not None:
            doc.setdefault("course_id", str(row["course_id"]))
            doc.setdefault("user_id", str(row["user_id"]))


indexer = search.BulkIndexer(lambda: search.cluster(), enrich)


@effect(*(spec.model for spec in REGISTRY.values()), ordering="unordered")
def index_event(envelope: Envelope[Event], rt: Runtime) -> None:
    try:
        indexer.put(envelope.id, search.document(envelope))
    except search.SearchUnavailable as exc:
        raise TransientError(str(exc)) from exc
    except ValueError as exc:  # the cluster refused this document for good
        raise PoisonEvent(f"not indexable: {exc}") from exc
