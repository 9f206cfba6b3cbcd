"""A cold start keeps every guarantee, and a function never migrates.

The first event a function handles in a fresh process (functions-framework on
its own module, as its Knative Service starts it) is handled exactly as a warm
delivery: one inbox row, the state change, the outbox rows, and a redelivery
changes nothing. A function that finds the schema older than its code answers
503 with the reason (KafkaSource retries) until the migrations have run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import pytest
import requests

from shared import migrations
from shared.domain.events import BookingRequested
from shared.edge import tokens
from shared.runtime import bootstrap
from shared.runtime.bootstrap import Runtime
from shared.runtime.config import Settings
from shared.runtime.db import Database
from shared.runtime.envelope import KafkaRecord
from shared.runtime.unit_of_work import unit_of_work
from tests.helpers.events import BOOKING, USER, app, fixture, post
from tests.helpers.examples import example
from tests.helpers.ports import accepting, free_port
from tests.helpers.rows import outbox, row, scalar, seed_booking, seed_course
from tests.helpers.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
CLI = Path(sys.executable).parent / "functions-framework"


@pytest.fixture
def cold_reserve_ticket(rt: Runtime, tmp_path: Path) -> Iterator[str]:
    """reserve_ticket alone in a new process, started like its Service; yields its URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"FUNCTION_TARGET", "FUNCTION_SOURCE"}}
    env.update({"DATABASE_URL": rt.settings.database_url, "REDIS_URL": rt.settings.redis_url,
                "PYTHONPATH": str(ROOT), "WORKERS": "1", "THREADS": "2"})
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)  # emitted events stay in the outbox to be read
    log = tmp_path / "reserve_ticket.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(CLI), "--target", "reserve_ticket", "--source", "functions/reserve_ticket.py",
             "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    def listening() -> bool:
        assert process.poll() is None, log.read_text()  # it died: say why
        return accepting(port)

    try:
        eventually(listening, timeout=30, interval=0.02, what="reserve_ticket's port open")
        yield f"http://127.0.0.1:{port}/"
    finally:
        process.terminate()
        process.wait(10)


def post_binary(url: str, event: dict[str, object]) -> requests.Response:
    """As KafkaSource forwards a binary-mode record."""
    headers = {f"ce-{k}": str(v) for k, v in event.items() if k not in {"data", "datacontenttype"}}
    headers["Content-Type"] = "application/json"
    return requests.post(url, data=json.dumps(event["data"]), headers=headers, timeout=30)


def test_the_first_event_after_a_cold_start_is_handled_like_a_warm_one(
        rt: Runtime, cold_reserve_ticket: str) -> None:
    seed_course(rt)
    seed_booking(rt)
    event = fixture("booking.requested")

    answer = post_binary(cold_reserve_ticket, event)
    assert answer.status_code == 200, answer.text

    handled = row(rt, "SELECT consumer, event_type FROM inbox WHERE event_id = :id",
                  id=event["id"])
    assert handled == {"consumer": "reserve_ticket", "event_type": "marketplace.booking.requested"}
    booking = row(rt, "SELECT ticket_id, amount_cents FROM bookings WHERE booking_id = :b",
                  b=BOOKING)
    assert booking is not None and booking["ticket_id"] is not None
    emitted = outbox(rt)
    assert [e["topic"] for e in emitted] == ["ticket.reserved", "payment.requested"]
    assert emitted[0]["data"]["ticket_id"] == str(booking["ticket_id"])
    assert emitted[0]["headers"]["ce_source"] == "/marketplace/functions/reserve-ticket"

    again = post_binary(cold_reserve_ticket, event)  # redelivered: nothing changes
    assert again.status_code == 200
    assert scalar(rt, "SELECT count(*) FROM inbox") == 1
    assert len(outbox(rt)) == 2
    assert scalar(rt, "SELECT count(*) FROM tickets WHERE status = 'RESERVED'") == 1


@pytest.fixture
def unmigrated(rt: Runtime) -> Iterator[Runtime]:
    """The process's runtime on a database the migrations have not reached yet."""
    name = "coldstart_behind"
    with rt.database.connection() as con:
        con.run(f"DROP DATABASE IF EXISTS {name}")
        con.run(f"CREATE DATABASE {name}")
    url = urlunparse(urlparse(rt.settings.database_url)._replace(path=f"/{name}"))
    behind = bootstrap.build(Settings.from_env({**os.environ, "DATABASE_URL": url}),
                             publish=False)
    bootstrap.install(behind)
    yield behind
    bootstrap.install(rt)
    behind.close()
    with rt.database.connection() as con:
        con.run(f"DROP DATABASE IF EXISTS {name}")


def test_a_function_never_migrates_and_answers_503_while_the_schema_is_behind(
        unmigrated: Runtime) -> None:
    event = fixture("booking.requested")
    token = tokens.issue_access(USER, "user", uuid.uuid4())
    request = app("my_notifications").test_client().get(
        "/users/me/notifications", headers={"Authorization": f"Bearer {token}"})
    for answer in (post("reserve_ticket", event), request):
        assert answer.status_code == 503
        assert answer.headers["Content-Type"] == "application/problem+json"
        problem = answer.get_json()
        assert problem["title"] == "Schema Behind"
        assert migrations.latest() in problem["detail"] and "migrations" in problem["detail"]
    assert not unmigrated.schema.current

    db = Database(unmigrated.settings.database_url, size=1)
    migrations.migrate(db)  # what the Job does
    db.close()
    assert post("reserve_ticket", event).status_code == 200  # no booking: nothing to do
    assert unmigrated.schema.current
    with unmigrated.db.transaction() as tx:
        assert tx.scalar("SELECT count(*) FROM inbox") == 1


class SlowProducer:
    """A producer whose start takes as long as the test wants (kafka-python's import, say)."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.sent: list[str] = []

    def warm(self) -> None:
        assert self.started.wait(10)

    def send_all(self, records: list[KafkaRecord]) -> None:
        self.sent.extend(dict(r.headers)["ce_id"].decode() for r in records)


def test_the_first_publish_does_not_wait_for_the_producer_and_keeps_the_order(
        rt: Runtime) -> None:
    producer = SlowProducer()
    cold = Runtime(rt.settings, rt.database, producer)
    ids = []
    for _ in range(3):  # committed while the producer is still starting: answered at once
        with unit_of_work("/test", cold) as uow:
            ids.append(uow.emit(example(BookingRequested)).id)
    assert producer.sent == []
    assert scalar(rt, "SELECT count(*) FROM outbox WHERE published_at IS NULL") == 3

    producer.started.set()
    eventually(lambda: list(producer.sent), lambda sent: len(sent) >= 3, timeout=10,
               interval=0.01, what="the three events sent")
    assert producer.sent == ids  # in the order they were committed
    with unit_of_work("/test", cold) as uow:  # warm now: published before it returns
        ids.append(uow.emit(example(BookingRequested)).id)
    assert producer.sent == ids
    cold.marks.flush()  # the marks are written in batches, off the request path
    assert scalar(rt, "SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0


STOP_AFTER_FIRST_PUBLISH = """
import sys, time

from tests.helpers.examples import example
from shared.domain.events import BookingRequested
from shared.runtime.bootstrap import Runtime
from shared.runtime.config import Settings
from shared.runtime.db import Database
from shared.runtime.unit_of_work import unit_of_work

class Producer:
    def warm(self) -> None:
        time.sleep(0.3)  # kafka-python's import and connection

    def send_all(self, records: object) -> None:
        pass

cfg = Settings.from_env()
rt = Runtime(cfg, Database(cfg.database_url), Producer())
with unit_of_work("/test", rt) as uow:
    uow.emit(example(BookingRequested))
sys.exit(0)  # scaled back to zero right after its first answer
"""


def test_a_process_stopping_after_its_first_event_sends_and_marks_what_it_committed(
        rt: Runtime) -> None:
    """Else the relay's next tick finds the rows, and pays for kafka-python to re-send them."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", STOP_AFTER_FIRST_PUBLISH], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert scalar(rt, "SELECT count(*) FROM outbox") == 1
    assert scalar(rt, "SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0
