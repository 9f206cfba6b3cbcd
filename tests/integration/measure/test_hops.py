"""The benchmark's saga hops, read from the outbox and inbox timestamps on real PostgreSQL."""

from __future__ import annotations

import time

from local.measure.hops import hop_latency
from shared.runtime.bootstrap import Runtime


def test_a_hop_is_the_time_from_the_outbox_row_to_the_handling_transaction(rt: Runtime) -> None:
    now = time.time()
    with rt.db.transaction() as tx:
        for n, delay_ms in enumerate([10, 20, 30, 40]):
            tx.execute(
                "INSERT INTO outbox (event_id, topic, record_key, value, headers, created_at)"
                " VALUES (:id, 'ticket.reserved', 'k', 'v', '[]', to_timestamp(:at))",
                id=f"e{n}", at=now)
            tx.execute(
                "INSERT INTO inbox (consumer, event_id, event_type, handled_at)"
                " VALUES ('open_hold', :id, 't', to_timestamp(:at))",
                id=f"e{n}", at=now + delay_ms / 1000)
        tx.execute(  # written before the window: not counted
            "INSERT INTO outbox (event_id, topic, record_key, value, headers, created_at)"
            " VALUES ('old', 'ticket.reserved', 'k', 'v', '[]', to_timestamp(:at))", at=now - 60)
        tx.execute("INSERT INTO inbox (consumer, event_id, event_type, handled_at)"
                   " VALUES ('open_hold', 'old', 't', to_timestamp(:at))", at=now)

    hops = hop_latency(rt.db, now - 1, now + 1)

    assert hops == {"ticket.reserved -> open_hold": {"p50": 20.0, "p95": 40.0, "p99": 40.0,
                                                     "n": 4}}
