"""Reading what Knative says about a failed delivery, where a redrive may go, and the
migrations' function bodies."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from shared import migrations
from shared.domain.dead_letters import (
    NotRoutable,
    address_template,
    destination,
    from_delivery,
    function_of_destination,
    reason_of,
    redeliver,
)
from shared.domain.events import DEAD_LETTER_TOPIC
from shared.runtime.routing import Reaction
from tests.helpers.listeners import Listener


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


# --- where a redrive goes: the routing declaration, never the record ---------------------

REACTIONS = [
    Reaction("settle_ticket", ("booking.confirmed", "booking.cancelled")),
    Reaction("record_dead_letter", (DEAD_LETTER_TOPIC,)),
    Reaction("sweep_expired_holds", schedule="* * * * *"),
]


def test_the_address_comes_from_configuration_in_every_setting(tmp_path: Path) -> None:
    assert address_template({"REACTIONS_URL": "http://reactions:8081/"}) == (
        "http://reactions:8081/{name}/")
    assert address_template({"REACTIONS_URL": "https://{name}.example.net"}) == (
        "https://{name}.example.net")
    startup = tmp_path / "startup.json"
    env = {"MARKETPLACE_STARTUP_FILE": str(startup)}
    assert address_template(env) is None  # nothing announced yet
    (tmp_path / "reactions-url").write_text("http://127.0.0.1:8081\n")
    assert address_template(env) == "http://127.0.0.1:8081/{name}/"
    resolv = tmp_path / "resolv.conf"  # a Knative pod's, in namespace marketplace-dev
    resolv.write_text("search marketplace-dev.svc.cluster.local svc.cluster.local cluster.local\n"
                      "nameserver 10.96.0.10\noptions ndots:5\n")
    pod = {"K_SERVICE": "dead-letters"}
    assert address_template(pod, resolv) == "http://{name}.marketplace-dev.svc.cluster.local"
    assert address_template({}, resolv) is None  # not in a Knative pod
    resolv.write_text("search example.com\nnameserver 8.8.8.8\n")
    assert address_template(pod, resolv) is None
    assert address_template(pod, tmp_path / "absent") is None


def test_only_a_declared_event_fed_function_is_an_address() -> None:
    template = "http://127.0.0.1:8081/{name}/"
    assert destination("settle_ticket", "marketplace.booking.confirmed", REACTIONS,
                       template) == "http://127.0.0.1:8081/settle-ticket/"
    refusals = [
        ("evil", "marketplace.booking.confirmed", template, "not one of our"),
        ("record_dead_letter", "marketplace.booking.confirmed", template, "not one of our"),
        ("sweep_expired_holds", "dev.knative.sources.ping", template, "not one of our"),
        ("settle_ticket", "marketplace.payment.succeeded", template, "does not take"),
        ("settle_ticket", "nonsense", template, "does not take"),
        ("settle_ticket", "marketplace.booking.confirmed", None, "REACTIONS_URL"),
    ]
    for function, event_type, given, why in refusals:
        with pytest.raises(NotRoutable, match=why):
            destination(function, event_type, REACTIONS, given)


def dead_row() -> dict[str, object]:
    return {"headers": {"ce-id": "e-1", "ce-type": "marketplace.booking.confirmed",
                        "ce-specversion": "1.0", "ce-source": "/s",
                        "content-type": "application/json",
                        "ce-knativeerrordest": "http://attacker.example/settle-ticket/",
                        "host": "attacker.example", "authorization": "Bearer stolen"},
            "body": b'{"booking_id": "b-1"}'}


def test_a_redelivery_posts_the_event_alone_and_follows_no_redirect() -> None:
    function, elsewhere = Listener(), Listener()
    redirecting = Listener(307, {"Location": f"{elsewhere.url}/settle-ticket/"})
    try:
        delivery = redeliver(dead_row(), f"{function.url}/settle-ticket/")
        assert (delivery.code, delivery.accepted) == (200, True)
        [(method, path, headers, body)] = function.requests
        assert (method, path, body) == ("POST", "/settle-ticket/", b'{"booking_id": "b-1"}')
        sent = {name.lower() for name in headers}
        assert {"ce-id", "ce-type", "ce-specversion", "ce-source", "content-type"} <= sent
        assert not {"ce-knativeerrordest", "authorization"} & sent
        assert headers["Host"] == function.url.removeprefix("http://")

        redirected = redeliver(dead_row(), f"{redirecting.url}/settle-ticket/")
        assert (redirected.code, redirected.accepted) == (307, False)
        assert "redirect" in redirected.answer and len(redirecting.requests) == 1
        assert elsewhere.requests == []
    finally:
        for listener in (function, elsewhere, redirecting):
            listener.close()
    unreachable = redeliver(dead_row(), function.url + "/settle-ticket/", timeout=2)
    assert (unreachable.code, unreachable.accepted) == (0, False)
