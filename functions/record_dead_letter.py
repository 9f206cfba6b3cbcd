"""Keep each dead letter in PostgreSQL, where the admin API lists and redrives it.

Subscribed to `marketplace.dead-letter` like any reaction (its KafkaSource has
no dead-letter sink of its own: a record it could not keep must not go back
to the topic it came from). A table rather than reading the topic from the
API: a page, a filter and a count are one query, the topic's retention does
not decide how long a dead letter can wait for its fix, a redrive's outcome
and who asked for it sit beside the record, and the API carries no Kafka
client.
"""

from __future__ import annotations

import logging

import flask

from shared.domain import dead_letters
from shared.domain.events import DEAD_LETTER_TOPIC
from shared.runtime.bootstrap import runtime
from shared.runtime.taps import tap
from shared.runtime.unit_of_work import with_db_retries

log = logging.getLogger("marketplace.dead_letters")


@tap(DEAD_LETTER_TOPIC)
def record_dead_letter(request: flask.Request) -> None:
    letter = dead_letters.from_delivery(dict(request.headers), request.get_data())

    def keep() -> None:
        with runtime().db.transaction() as tx:
            if dead_letters.record(tx, letter):
                log.warning("dead letter: %s %s failed in %s (HTTP %s): %s", letter.event_type,
                            letter.event_id, letter.function, letter.code, letter.reason)

    with_db_retries(keep)
