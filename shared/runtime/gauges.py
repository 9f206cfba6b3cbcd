"""Figures about the system, not one process: read from PostgreSQL at each scrape.

Outbox rows waiting to be published and the age of the oldest (a growing
age means the broker is unreachable or the relay is not running), and holds
open (bookings awaiting payment). Every worker of every host would report the
same numbers, so one function carries them: `health`, which the prod overlay
keeps warm and the local API host serves.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from shared.runtime.bootstrap import runtime

log = logging.getLogger(__name__)


class SystemGauges:
    """A prometheus-client collector (duck-typed: prometheus-client loads only when scraped)."""

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        try:
            with runtime().db.transaction() as tx:
                outbox = tx.one(
                    "SELECT count(*) AS waiting, coalesce(extract(epoch FROM"
                    " clock_timestamp() - min(created_at)), 0) AS oldest"
                    " FROM outbox WHERE published_at IS NULL")
                holds = tx.scalar("SELECT count(*) FROM bookings"
                                  " WHERE status = 'AWAITING_PAYMENT'")
        except Exception as exc:  # the scrape still answers, without these
            log.warning("system gauges unavailable: %s", exc)
            return
        assert outbox is not None
        yield GaugeMetricFamily("marketplace_outbox_waiting",
                                "Outbox rows not yet published to Kafka", outbox["waiting"])
        yield GaugeMetricFamily("marketplace_outbox_oldest_age_seconds",
                                "Age of the oldest unpublished outbox row (0 if none)",
                                float(outbox["oldest"]))
        yield GaugeMetricFamily("marketplace_holds_open",
                                "Bookings holding a ticket while awaiting payment", holds)
