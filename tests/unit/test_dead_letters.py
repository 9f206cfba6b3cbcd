"""Reading what Knative says about a failed delivery, and the migrations' function bodies."""

from __future__ import annotations

import base64

from shared import migrations
from shared.domain.dead_letters import from_delivery, function_of_destination, reason_of


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_the_function_is_read_from_the_destination_in_the_cluster_and_locally() -> None:
    assert function_of_destination(
        "http://settle-ticket.marketplace.svc.cluster.local") == "settle_ticket"
    assert function_of_destination("http://settle-ticket.marketplace.svc.cluster.local/") == (
        "settle_ticket")
    assert function_of_destination("http://127.0.0.1:8081/reserve-ticket/") == "reserve_ticket"
    assert function_of_destination("") == "unknown"


def test_the_reason_is_made_readable() -> None:
    assert reason_of(b64('{"title": "x", "detail": "no such course"}')) == "no such course"
    page = ("<!doctype html>\n<title>422 Unprocessable Entity</title>\n<h1>Unprocessable</h1>\n"
            "<p>data of marketplace.booking.requested does not match its schema: "
            "booking_id: Input should be a valid UUID &amp; more</p>\n")
    assert reason_of(b64(page)) == ("data of marketplace.booking.requested does not match its"
                                    " schema: booking_id: Input should be a valid UUID & more")
    assert reason_of(b64("ConnectionRefusedError: [Errno 111]")) == (
        "ConnectionRefusedError: [Errno 111]")
    assert reason_of("") == "(no answer body)"
    assert len(reason_of(b64("x" * 5000))) == 1000


def test_a_delivered_dead_letter_keeps_the_original_event_without_the_error_extensions() -> None:
    letter = from_delivery({
        "Ce-Id": "e-1", "Ce-Type": "marketplace.booking.confirmed", "Ce-Source": "/s",
        "Ce-Subject": "b-1", "Ce-Specversion": "1.0", "Content-Type": "application/json",
        "Ce-Knativeerrordest": "http://127.0.0.1:1/settle-ticket/",
        "Ce-Knativeerrorcode": "422", "Ce-Knativeerrordata": b64("<p>bad</p>"),
        "Host": "127.0.0.1", "Content-Length": "2"}, b"{}")
    assert (letter.event_id, letter.function, letter.topic, letter.code, letter.reason) == (
        "e-1", "settle_ticket", "booking.confirmed", 422, "bad")
    assert letter.headers == {"ce-id": "e-1", "ce-type": "marketplace.booking.confirmed",
                              "ce-source": "/s", "ce-subject": "b-1", "ce-specversion": "1.0",
                              "content-type": "application/json"}
    poison = from_delivery({"Ce-Type": "nonsense"}, b"not json")
    assert poison.event_id.startswith("sha256:") and poison.topic is None
    assert (poison.function, poison.code, poison.subject) == ("unknown", 0, None)


def test_a_function_body_in_a_migration_stays_one_statement() -> None:
    sql = ("-- a comment;\nCREATE TABLE t (a int);\n"
           "CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n"
           "    RETURN NEW;\nEND\n$$;\nCREATE INDEX i ON t (a);\n")
    assert migrations._statements(sql) == [
        "CREATE TABLE t (a int)",
        "CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n"
        "    RETURN NEW;\nEND\n$$",
        "CREATE INDEX i ON t (a)"]
