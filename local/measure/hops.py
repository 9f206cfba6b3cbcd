"""Saga hops in milliseconds: from an event's outbox row to the reaction that handled it.

Measured inside the stack from the two timestamps the database already keeps:
`outbox.created_at` (the emitting transaction writes the row, just before it
commits) and `inbox.handled_at` (the consuming transaction starts). The
difference is everything a hop costs outside the handlers: commit, the Kafka
send and acknowledgement, the broker, the KafkaSource (its fetch and the HTTP
delivery) and the function host up to the handler's first statement.
Effects (notifications, the search index) keep no inbox row, so they are not
in it.
"""

from __future__ import annotations

from typing import Any

from shared.runtime.db import Database

_HOPS = """
SELECT o.topic, i.consumer,
       percentile_disc(0.5) WITHIN GROUP (ORDER BY i.handled_at - o.created_at) AS p50,
       percentile_disc(0.95) WITHIN GROUP (ORDER BY i.handled_at - o.created_at) AS p95,
       percentile_disc(0.99) WITHIN GROUP (ORDER BY i.handled_at - o.created_at) AS p99,
       count(*) AS n
FROM outbox o JOIN inbox i ON i.event_id = o.event_id
WHERE o.created_at >= to_timestamp(CAST(:since AS float8))
  AND o.created_at < to_timestamp(CAST(:until AS float8))
GROUP BY o.topic, i.consumer
ORDER BY n DESC, o.topic, i.consumer
"""


# The webhook's transaction writes payment.succeeded; settle_booking's writes
# booking.confirmed, as it makes the booking CONFIRMED: both keyed by the booking.
_SETTLED = """
SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY c.created_at - s.created_at) AS p50,
       percentile_disc(0.95) WITHIN GROUP (ORDER BY c.created_at - s.created_at) AS p95,
       percentile_disc(0.99) WITHIN GROUP (ORDER BY c.created_at - s.created_at) AS p99,
       count(*) AS n
FROM outbox s JOIN outbox c ON c.record_key = s.record_key AND c.topic = 'booking.confirmed'
WHERE s.topic = 'payment.succeeded'
  AND s.created_at >= to_timestamp(CAST(:since AS float8))
  AND s.created_at < to_timestamp(CAST(:until AS float8))
"""
SETTLED = "webhook's payment.succeeded -> CONFIRMED"


def hop_latency(db: Database, since: float, until: float) -> dict[str, dict[str, float]]:
    """Per "topic -> function": p50/p95/p99 in ms and the count, for events written in the window.

    `since` and `until` are epoch seconds. One more line, `SETTLED`: from the
    webhook's transaction writing payment.succeeded to settle_booking's writing
    booking.confirmed (the booking CONFIRMED, just before its commit).
    """
    with db.transaction() as tx:
        rows = tx.all(_HOPS, since=since, until=until)
        settled = tx.one(_SETTLED, since=since, until=until)
    found = {f"{r['topic']} -> {r['consumer']}": {
        **{q: round(_ms(r[q]), 1) for q in ("p50", "p95", "p99")}, "n": int(r["n"])}
        for r in rows}
    if settled is not None and settled["n"]:
        found[SETTLED] = {**{q: round(_ms(settled[q]), 1) for q in ("p50", "p95", "p99")},
                          "n": int(settled["n"])}
    return found


def _ms(interval: Any) -> float:
    """pg8000 returns an interval as a `datetime.timedelta`."""
    return float(interval.total_seconds() * 1000.0)
