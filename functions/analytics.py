"""The HTTP function behind /analytics: the summary, answered by Elasticsearch aggregations.

One search, no documents: event counts by type, each split by currency with
the sum of amounts, overall and per course. Everything else is arithmetic on
those counts, because each booking emits exactly one terminal event:

- bookings by final status: the count of booking.confirmed / .cancelled /
  .expired / .rejected; IN_PROGRESS is requested minus those (PENDING plus
  AWAITING_PAYMENT in PostgreSQL);
- tickets sold: confirmed bookings;
- revenue per currency: money received (payment.succeeded) minus refunds
  (payment.refunded). A refund only ever returns money that arrived for a
  booking no longer waiting, so net revenue equals the confirmed bookings'
  amounts, which is what the consistency check compares it with;
- conversion: confirmed / requested; expiry rate: expired / holds opened
  (payment.requested).

With `from`/`to` only events in that window count.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import AwareDatetime, ConfigDict, Field

from shared.adapters import search
from shared.edge.api import Api, Problem, Query
from shared.edge.roles import ADMINS

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

    from shared.adapters.cluster import Cluster

api = Api()
TERMINAL = {"booking.confirmed": "CONFIRMED", "booking.cancelled": "CANCELLED",
            "booking.expired": "EXPIRED", "booking.rejected": "REJECTED"}
MAX_COURSES = 10_000

_BY_TYPE: dict[str, Any] = {
    "terms": {"field": "type", "size": 100},
    "aggs": {"money": {"terms": {"field": "currency", "size": 50},
                       "aggs": {"cents": {"sum": {"field": "amount_cents"}}}}},
}


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def figures(type_buckets: list[dict[str, Any]]) -> dict[str, Any]:
    """The summary's numbers from one `terms` on type (with currency sums beneath)."""
    events = {b["key"]: int(b["doc_count"]) for b in type_buckets}
    cents = {b["key"]: {m["key"]: int(m["cents"]["value"]) for m in b["money"]["buckets"]}
             for b in type_buckets}
    requested = events.get("booking.requested", 0)
    by_status = {status: events.get(t, 0) for t, status in TERMINAL.items()}
    by_status["IN_PROGRESS"] = requested - sum(by_status.values())
    received = cents.get("payment.succeeded", {})
    refunded = cents.get("payment.refunded", {})
    confirmed = cents.get("booking.confirmed", {})
    revenue = {
        currency: {"received_cents": received.get(currency, 0),
                   "refunded_cents": refunded.get(currency, 0),
                   "net_cents": received.get(currency, 0) - refunded.get(currency, 0),
                   "confirmed_cents": confirmed.get(currency, 0)}
        for currency in sorted({*received, *refunded, *confirmed})
    }
    return {
        "events": dict(sorted(events.items())),
        "bookings_by_status": by_status,
        "bookings_requested": requested,
        "tickets_sold": by_status["CONFIRMED"],
        "revenue": revenue,
        "conversion_rate": _rate(by_status["CONFIRMED"], requested),
        "expiry_rate": _rate(by_status["EXPIRED"], events.get("payment.requested", 0)),
    }


def summary(es: Elasticsearch | Cluster, course_id: uuid.UUID | None = None,
            start: datetime | None = None, end: datetime | None = None) -> dict[str, Any]:
    search.ensure_index(es)
    filters: list[dict[str, Any]] = []
    if course_id is not None:
        filters.append({"term": {"course_id": str(course_id)}})
    if start is not None or end is not None:
        window = {k: v.isoformat() for k, v in (("gte", start), ("lt", end)) if v is not None}
        filters.append({"range": {"time": window}})
    answer = es.search(index=search.INDEX, size=0, query={"bool": {"filter": filters}}, aggs={
        "by_type": _BY_TYPE,
        "by_course": {"terms": {"field": "course_id", "size": MAX_COURSES}, "aggs": {
            "by_type": _BY_TYPE}},
    })
    aggs = answer["aggregations"]
    return {
        "course_id": str(course_id) if course_id else None,
        "from": start.isoformat() if start else None,
        "to": end.isoformat() if end else None,
        "overall": figures(aggs["by_type"]["buckets"]),
        "courses": {b["key"]: figures(b["by_type"]["buckets"])
                    for b in sorted(aggs["by_course"]["buckets"], key=lambda b: b["key"])},
    }


class SummaryQuery(Query):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    course_id: uuid.UUID | None = None
    start: AwareDatetime | None = Field(None, alias="from")
    end: AwareDatetime | None = Field(None, alias="to")


@api.route("GET", "/analytics/summary", roles=ADMINS, errors=(503,))
def get_summary(query: SummaryQuery) -> dict[str, Any]:
    """Event counts, bookings by final status, revenue, conversion and expiry, per course."""
    try:
        return summary(search.cluster(), query.course_id, query.start, query.end)
    except Exception as exc:
        raise Problem(503, "Service Unavailable", f"search is not answering: "
                      f"{type(exc).__name__}") from exc


analytics = api.function("/analytics")
