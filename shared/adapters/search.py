"""The analytics index: the Elasticsearch client, the index template, and bulk indexing.

One document per CloudEvent, its id the CloudEvent id, so an event read or
produced twice overwrites its own document instead of counting twice. The index template
types the fields the summary aggregates on (keywords, a date, a long amount);
the raw event is kept but not indexed.

The client speaks to real Elasticsearch by default; the embedded
OpenSearch-compatible server only answers `server_mode="serverless"` requests,
which `ELASTICSEARCH_SERVER_MODE=serverless` selects.

The functions talk to the cluster through `cluster()` (`elastic_transport` only,
see `shared.adapters.cluster`); the tools and tests, which need more of the
API, through `client()`, the `elasticsearch` client (slow to import, so a cold start
should not pay for it). Both are loaded with their first use.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from functools import cache
from typing import TYPE_CHECKING, Any

from shared.domain.events import Event
from shared.runtime.config import settings
from shared.runtime.envelope import Envelope

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

    from shared.adapters.cluster import Cluster

INDEX = "marketplace-events"
TEMPLATE = "marketplace-events"
_KEYWORD = {"type": "keyword"}
MAPPINGS: dict[str, Any] = {
    "dynamic": False,
    "properties": {
        "type": _KEYWORD, "time": {"type": "date"}, "source": _KEYWORD, "subject": _KEYWORD,
        "course_id": _KEYWORD, "user_id": _KEYWORD, "booking_id": _KEYWORD,
        "payment_id": _KEYWORD, "ticket_id": _KEYWORD, "amount_cents": {"type": "long"},
        "currency": _KEYWORD, "status": _KEYWORD, "reason": _KEYWORD,
        "title": {"type": "text"}, "data": {"type": "object", "enabled": False},
    },
}

# The state an event moves its aggregate into (bookings, payments, courses).
STATUS_AFTER = {
    "booking.requested": "PENDING", "payment.requested": "AWAITING_PAYMENT",
    "booking.confirmed": "CONFIRMED", "booking.rejected": "REJECTED",
    "booking.cancelled": "CANCELLED", "booking.expired": "EXPIRED",
    "payment.succeeded": "SUCCEEDED", "payment.failed": "FAILED",
    "payment.refunded": "REFUNDED", "ticket.reserved": "RESERVED",
    "ticket.unavailable": "UNAVAILABLE", "course.published": "ACTIVE",
    "course.deactivated": "INACTIVE",
}


class SearchUnavailable(RuntimeError):
    """The cluster did not answer, or asked us to slow down: try again later."""


@cache
def client(url: str = "", mode: str = "") -> Elasticsearch:
    """The cluster at `url` (default: the settings'), one client per process and address."""
    url, mode = _address(url, mode)
    from elasticsearch import Elasticsearch

    if mode == "serverless":
        return Elasticsearch(url, server_mode="serverless", request_timeout=10)
    return Elasticsearch(url, request_timeout=10)


def _address(url: str, mode: str) -> tuple[str, str]:
    if not url:
        url, mode = settings().elasticsearch_url, mode or settings().elasticsearch_server_mode
    if not url:
        raise RuntimeError("ELASTICSEARCH_URL is not set (make run and the tests set it)")
    return url, mode


def cluster(url: str = "", mode: str = "") -> Cluster:
    """The functions' handle on the cluster (default: the settings', read on each call)."""
    return _cluster(*_address(url, mode))


@cache
def _cluster(url: str, mode: str) -> Cluster:
    """One per process and address."""
    from shared.adapters.cluster import Cluster

    return Cluster(url, mode, request_timeout=10)


_ready: set[int] = set()
_ready_lock = threading.Lock()


def ensure_index(es: Elasticsearch | Cluster, index: str = INDEX) -> None:
    """Put the index template and create the index, once per process (both idempotent)."""
    if id(es) in _ready:
        return
    with _ready_lock:
        es.indices.put_index_template(name=TEMPLATE, index_patterns=[f"{INDEX}*"],
                                      template={"mappings": MAPPINGS}, priority=100)
        if not es.indices.exists(index=index):
            try:
                es.indices.create(index=index)
            except Exception as exc:  # ApiError or ClusterError, named by the error's type
                if "already_exists" not in str(exc):
                    raise
        _ready.add(id(es))


def forget_index_setup() -> None:
    """Tests that delete the index call this so the next write sets it up again."""
    _ready.clear()


def document(envelope: Envelope[Event], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The indexed form of an event: the fields the template maps, plus the raw data."""
    data = envelope.data.model_dump(mode="json")
    doc: dict[str, Any] = {
        "type": envelope.topic, "time": envelope.time.isoformat(), "source": envelope.source,
        "subject": envelope.subject, "status": STATUS_AFTER.get(envelope.topic), "data": data,
    }
    for name in ("course_id", "user_id", "booking_id", "payment_id", "ticket_id",
                 "amount_cents", "currency", "reason", "title"):
        if data.get(name) is not None:
            doc[name] = data[name]
    if envelope.topic == "course.published":
        doc.pop("amount_cents", None)  # a price, not money that moved
    for name, value in (extra or {}).items():
        doc.setdefault(name, value)
    return doc


def bulk_index(es: Elasticsearch | Cluster, documents: Sequence[tuple[str, dict[str, Any]]],
               index: str = INDEX) -> list[str | None]:
    """Index (id, document) pairs in one `_bulk` call; for each, None or why it was refused.

    A refusal is for good (a 4xx but 429: the document itself is wrong), so the
    caller can set that one aside. SearchUnavailable, for the call failing or the
    cluster asking for any document again (429, 5xx), means send them all again:
    their ids make the repeat harmless.
    """
    if not documents:
        return []
    operations: list[dict[str, Any]] = []
    for doc_id, doc in documents:
        operations += [{"index": {"_index": index, "_id": doc_id}}, doc]
    try:
        ensure_index(es, index)
        answer = es.bulk(operations=operations)
    except Exception as exc:  # ApiError, ClusterError or the transport's: all of it comes again
        raise SearchUnavailable(f"{type(exc).__name__}: {exc}") from exc
    refused: list[str | None] = []
    for item in answer["items"]:
        result = item.get("index", {})
        status = int(result.get("status", 500))
        if status == 429 or status >= 500:
            raise SearchUnavailable(f"HTTP {status}: {result.get('error')}")
        refused.append(None if status < 300 else str(result.get("error")))
    if len(refused) != len(documents):
        raise SearchUnavailable(f"{len(refused)} answers for {len(documents)} documents")
    return refused
