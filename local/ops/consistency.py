"""Do the analytics figures agree with PostgreSQL? Prints every difference; exit 1 if any.

    python -m local.ops.consistency        # DATABASE_URL and ELASTICSEARCH_URL from the environment

Compared overall and per course: bookings requested, bookings by status (the
four final ones, and PENDING + AWAITING_PAYMENT as IN_PROGRESS), tickets sold
(`tickets` SOLD against booking.confirmed), net revenue per currency (the
confirmed bookings' amounts) and refunds per currency (REFUNDED payments).

The indexer reads the topics on a schedule, so with KAFKA_BOOTSTRAP_SERVERS
set this first waits (up to 90 s) until it has committed every record on
them. Events still on their way through the saga show up as differences: run
it when the system is quiet, or retry (`make demo` waits until it is clean).
"""

from __future__ import annotations

import sys
from collections import defaultdict
from typing import Any

from elasticsearch import Elasticsearch

from functions import index_event
from functions.analytics import summary
from local import console
from shared.adapters import search
from shared.runtime.config import settings
from shared.runtime.db import Database

Figures = dict[str, int]
INDEXER_SECONDS = 90.0  # a cluster's indexer runs once a minute, for up to 20 s
FINAL = ("CONFIRMED", "CANCELLED", "EXPIRED", "REJECTED")


def _scoped(rows: list[dict[str, Any]], name: Any, value: str = "n"
            ) -> dict[str, Figures]:
    """Rows with a course_id, summed into {"overall": ..., course_id: ...} under `name(row)`."""
    scopes: dict[str, Figures] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        for scope in ("overall", str(row["course_id"])):
            scopes[scope][name(row)] += int(row[value] or 0)
    return scopes


def postgres_figures(db: Database) -> dict[str, Figures]:
    with db.transaction() as tx:
        bookings = tx.all("SELECT course_id, status, count(*) AS n FROM bookings"
                          " GROUP BY course_id, status")
        sold = tx.all("SELECT course_id, count(*) AS n FROM tickets WHERE status = 'SOLD'"
                      " GROUP BY course_id")
        net = tx.all("SELECT course_id, currency, sum(amount_cents) AS n FROM bookings"
                     " WHERE status = 'CONFIRMED' GROUP BY course_id, currency")
        refunds = tx.all("SELECT b.course_id, p.currency, sum(p.amount_cents) AS n"
                         " FROM payments p JOIN bookings b USING (booking_id)"
                         " WHERE p.status = 'REFUNDED' GROUP BY b.course_id, p.currency")
    merged: dict[str, Figures] = defaultdict(lambda: defaultdict(int))
    for part in (
        _scoped(bookings, lambda r: "bookings_requested"),
        _scoped(bookings, lambda r: r["status"] if r["status"] in FINAL else "IN_PROGRESS"),
        _scoped(sold, lambda r: "tickets_sold"),
        _scoped(net, lambda r: f"net_cents {r['currency'].strip()}"),
        _scoped(refunds, lambda r: f"refunded_cents {r['currency'].strip()}"),
    ):
        for scope, figures in part.items():
            merged[scope].update(figures)
    return merged


def analytics_figures(es: Elasticsearch) -> dict[str, Figures]:
    es.indices.refresh(index=search.INDEX)
    answer = summary(es)

    def flat(f: dict[str, Any]) -> Figures:
        out = {"bookings_requested": f["bookings_requested"], "tickets_sold": f["tickets_sold"],
               **f["bookings_by_status"]}
        for currency, money in f["revenue"].items():
            out[f"net_cents {currency}"] = money["net_cents"]
            out[f"refunded_cents {currency}"] = money["refunded_cents"]
        return out

    return {"overall": flat(answer["overall"]),
            **{course: flat(f) for course, f in answer["courses"].items()}}


def differences(db: Database, es: Elasticsearch) -> list[str]:
    postgres, analytics = postgres_figures(db), analytics_figures(es)
    found = []
    for scope in sorted(set(postgres) | set(analytics), key=lambda s: (s != "overall", s)):
        pg, an = postgres.get(scope, {}), analytics.get(scope, {})
        for name in sorted(set(pg) | set(an)):
            if pg.get(name, 0) != an.get(name, 0):
                found.append(f"{scope}: {name}: postgres {pg.get(name, 0)},"
                             f" analytics {an.get(name, 0)}")
    return found


@console.command("consistency")
def main() -> int:
    try:
        cfg = settings()
    except RuntimeError as exc:  # a setting missing or weak: the one line that says which
        print(exc, file=sys.stderr)
        return 2
    if not cfg.database_url or not cfg.elasticsearch_url:
        print("set DATABASE_URL and ELASTICSEARCH_URL (and ELASTICSEARCH_SERVER_MODE="
              "serverless for the embedded search server)", file=sys.stderr)
        return 2
    if cfg.kafka_bootstrap_servers:
        behind = index_event.wait_until_indexed(cfg.kafka_bootstrap_servers, INDEXER_SECONDS)
        if behind:
            print("the analytics indexer has not caught up"
                  + (f": {behind} records behind" if behind > 0 else " (Kafka did not answer)")
                  + "; comparing anyway", file=sys.stderr)
    db = Database(cfg.database_url)
    try:
        found = differences(db, search.client())
    finally:
        db.close()
    for line in found:
        print(line)
    print("consistency: " + (f"{len(found)} difference(s)" if found else
                             "analytics and PostgreSQL agree"))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
