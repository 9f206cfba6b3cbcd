"""The demo scenario through the whole stack, then the analytics against PostgreSQL.

The summary's numbers match PostgreSQL exactly, the consistency check finds
no difference, and producing every record again changes no number and sends
no second message.
"""

from __future__ import annotations

from typing import Any

import requests
from kafka import KafkaAdminClient, TopicPartition

from functions import index_event
from functions.analytics import summary
from local.ops import consistency
from local.stack.demo import Scenario
from shared.adapters import search
from shared.runtime.kafka import DOORBELL_VARIABLE
from tests.helpers.broker import caught_up, produce_again, read_everything
from tests.helpers.marketplace import ADMIN_EMAIL, HOLD_TTL_SECONDS, Marketplace
from tests.helpers.waiting import eventually


def messages(marketplace: Marketplace) -> dict[str, Any]:
    runtime = marketplace.stack.runtime
    assert runtime is not None
    data = requests.get(marketplace.stack.env["AWS_ENDPOINT_URL"] + "/moto-api/data.json",
                        timeout=30).json()
    with runtime.db.transaction() as tx:
        stored = tx.all("SELECT event_id, channel, status, provider_message_id"
                        " FROM notifications ORDER BY event_id, channel")
    return {"mail": len(data["ses"]["Message"]), "sms": len(data["sns"]["SMS"]),
            "stored": stored}


def indexed_past(admin: KafkaAdminClient, positions: dict[TopicPartition, int]) -> bool:
    """Has the analytics indexer committed past these offsets? It reads the topics itself, on
    a schedule, so `caught_up` (the KafkaSources' groups) does not wait for it."""
    committed = admin.list_group_offsets(index_event.GROUP).get(index_event.GROUP, {})
    return all((mark := committed.get(tp)) is not None and mark.offset > offset
               for tp, offset in positions.items())


def test_demo_scenario_and_analytics_agree_with_postgres(marketplace: Marketplace) -> None:
    stack = marketplace.stack
    runtime = stack.runtime
    assert runtime is not None
    es = search.client(stack.env["ELASTICSEARCH_URL"], stack.env["ELASTICSEARCH_SERVER_MODE"])
    scenario = Scenario(stack.api_url, runtime.db, es)
    scenario.play(scenario.client.signed_in(marketplace.admin.token, email=ADMIN_EMAIL))
    failed = [(what, seen) for what, ok, seen in scenario.checks if not ok]
    assert not failed

    # every hold runs out, then nothing moves any more
    def open_bookings() -> int:
        with runtime.db.transaction() as tx:
            return int(tx.scalar("SELECT count(*) FROM bookings"
                                 " WHERE status IN ('PENDING', 'AWAITING_PAYMENT')"))

    eventually(open_bookings, lambda n: n == 0, timeout=HOLD_TTL_SECONDS + 30,
               what="every hold settled")
    assert eventually(lambda: consistency.differences(runtime.db, es), lambda d: not d,
                      what="analytics caught up") == []
    es.indices.refresh(index=search.INDEX)
    before = summary(es)
    course = before["courses"][scenario.course_id]
    assert course["bookings_by_status"] == {"CONFIRMED": 1, "CANCELLED": 1, "EXPIRED": 3,
                                            "REJECTED": 2, "IN_PROGRESS": 0}
    bootstrap = stack.env["KAFKA_BOOTSTRAP_SERVERS"]
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    records = read_everything(bootstrap)
    # every function has handled every record (the last emails included) before we count
    eventually(lambda: caught_up(admin, {TopicPartition(r.topic, r.partition): r.offset
                                         for r in records}),
               timeout=60, what="every record handled")
    sent = eventually(lambda: messages(marketplace),
                      lambda m: all(n["status"] != "SENDING" for n in m["stored"]))

    replayed = produce_again(bootstrap, records, marketplace.stack.env.get(DOORBELL_VARIABLE))
    eventually(lambda: caught_up(admin, replayed), timeout=120, what="replay consumed")
    eventually(lambda: indexed_past(admin, replayed), timeout=120, what="replay indexed")
    admin.close()

    es.indices.refresh(index=search.INDEX)
    assert summary(es) == before
    assert consistency.differences(runtime.db, es) == []
    assert messages(marketplace) == sent
