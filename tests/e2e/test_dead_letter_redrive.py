"""A dead letter is listed, redriven once its cause is fixed, handled once; again: no change.

And it goes only ever to our function, at the address the routing declaration gives it.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest
from kafka import KafkaProducer

from local.knative import faults
from local.ops import dead_letters
from shared.domain.events import DEAD_LETTER_TOPIC
from shared.runtime.bootstrap import Runtime
from tests.helpers.listeners import Listener
from tests.helpers.marketplace import ADMIN_PASSWORD, Marketplace
from tests.helpers.waiting import eventually

REDRIVE = "/admin/dead-letters/redrive"


def inbox_rows(rt: Runtime, event_id: str) -> list[tuple[str, str]]:
    with rt.database.transaction() as tx:
        return [(r["consumer"], r["event_id"]) for r in tx.all(
            "SELECT consumer, event_id FROM inbox WHERE event_id = :e ORDER BY consumer",
            e=event_id)]


def ledger(rt: Runtime, event_id: str) -> list[dict[str, Any]]:
    """send_notifications' own ledger (it keeps no inbox rows): the messages of one event."""
    with rt.database.transaction() as tx:
        return [dict(r) for r in tx.all(
            "SELECT notification_id, channel, template, status, provider_message_id, attempts,"
            " updated_at FROM notifications WHERE event_id = :e ORDER BY channel", e=event_id)]


def sent(rt: Runtime, event_id: str) -> list[tuple[str, str, str]]:
    return [(m["channel"], m["template"], m["status"]) for m in ledger(rt, event_id)]


def letters(marketplace: Marketplace, query: str = "") -> list[dict[str, Any]]:
    page: dict[str, Any] = marketplace.admin.ok("GET", f"/admin/dead-letters?size=100{query}")
    return list(page["items"])


def test_a_dead_letter_is_redriven_to_its_one_function_once_fixed(
        marketplace: Marketplace, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    rt = marketplace.stack.runtime
    assert rt is not None
    course = marketplace.publish(capacity=1)
    user = marketplace.register()
    booking_id = user.book(course["course_id"])
    # a bug in send_notifications: it refuses this booking's events (422), so they are
    # dead-lettered
    faults.refuse(marketplace.faults_file, "/send-notifications", booking_id)
    try:
        user.wait_status(booking_id, "AWAITING_PAYMENT")
        user.ok("POST", f"/bookings/{booking_id}/payment", {"payment_method": "pm_card_visa"},
                status=202)
        user.wait_status(booking_id, "CONFIRMED")
        [letter] = eventually(
            lambda: [i for i in letters(marketplace, "&function=send_notifications&status=DEAD")
                     if i["subject"] == booking_id], what="the dead letter listed")
        assert letter["type"] == "marketplace.booking.confirmed"
        assert letter["topic"] == "booking.confirmed"
        assert letter["code"] == 422 and "refused by a fault" in letter["reason"]
        assert letter["recorded_destination"].endswith("/send-notifications/")
        assert (letter["failures"], letter["redrives"]) == (1, 0)
        # the booking is confirmed and its ticket sold (one transaction), but its confirmation
        # email is missing, and the timeline says why
        after_confirm = marketplace.course(course["course_id"])
        assert (after_confirm["reserved"], after_confirm["sold"]) == (0, 1)
        assert sent(rt, letter["event_id"]) == []
        confirmed = user.ok("GET", f"/bookings/{booking_id}/timeline")["events"][-1]
        assert confirmed["event_id"] == letter["event_id"]
        assert "send_notifications" not in {h["function"] for h in confirmed["handled_by"]}
        assert confirmed["messages"] == []
        assert [(d["function"], d["code"], d["status"]) for d in confirmed["dead_lettered"]] == [
            ("send_notifications", 422, "DEAD")]

        # redriven before the fix: refused again, still waiting, one more failure
        again = marketplace.admin.ok("POST", REDRIVE, {"ids": [letter["event_id"]]}, status=202)
        assert (again["matched"], again["delivered"], again["failed"]) == (1, 0, 1)
        [still] = [i for i in letters(marketplace) if i["event_id"] == letter["event_id"]]
        assert (still["status"], still["failures"], still["redrives"]) == ("DEAD", 2, 1)
        assert sent(rt, letter["event_id"]) == []
    finally:
        faults.clear(marketplace.faults_file)  # the fix is deployed

    handled_before = inbox_rows(rt, letter["event_id"])
    result = marketplace.admin.ok("POST", REDRIVE, {"ids": [letter["event_id"]]}, status=202)
    assert (result["matched"], result["delivered"], result["failed"]) == (1, 1, 0)
    assert [(i["function"], i["code"], i["delivered"]) for i in result["items"]] == [
        ("send_notifications", 200, True)]
    # delivered synchronously, to send_notifications alone: the email is sent by the time the
    # redrive answers, and no reaction handled the event again
    assert sent(rt, letter["event_id"]) == [("email", "booking_confirmed", "SENT")]
    mail = ledger(rt, letter["event_id"])
    assert inbox_rows(rt, letter["event_id"]) == handled_before
    mine = user.ok("GET", "/users/me/notifications?size=100")["items"]
    assert [(n["template"], n["status"]) for n in mine
            if n["event_id"] == letter["event_id"]] == [("booking_confirmed", "SENT")]
    [redriven] = [i for i in letters(marketplace) if i["event_id"] == letter["event_id"]]
    assert redriven["status"] == "REDRIVEN" and redriven["last_redriven_by"] is not None
    line = user.ok("GET", f"/bookings/{booking_id}/timeline")
    confirmed = line["events"][-1]
    assert [h["function"] for h in confirmed["handled_by"]] == ["send_notifications"]
    assert [(m["template"], m["status"]) for m in confirmed["messages"]] == [
        ("booking_confirmed", "SENT")]
    assert [(d["function"], d["status"]) for d in confirmed["dead_lettered"]] == [
        ("send_notifications", "REDRIVEN")]

    # a second redrive is accepted (the ledger says SENT: nothing is sent) and changes nothing
    second = marketplace.admin.ok("POST", REDRIVE, {"ids": [letter["event_id"]]}, status=202)
    assert (second["delivered"], second["failed"]) == (1, 0)
    assert ledger(rt, letter["event_id"]) == mail
    assert inbox_rows(rt, letter["event_id"]) == handled_before
    assert user.ok("GET", f"/bookings/{booking_id}/timeline") == line
    # and one by function picks only letters still waiting: not this one
    by_function = marketplace.admin.ok("POST", REDRIVE, {"function": "send_notifications"},
                                       status=202)
    assert letter["event_id"] not in {i["event_id"] for i in by_function["items"]}
    with rt.database.transaction() as tx:
        asked = tx.all("SELECT filter, delivered, failed FROM redrives"
                       " WHERE CAST(:d AS uuid) = ANY(dead_letter_ids) ORDER BY requested_at",
                       d=letter["dead_letter_id"])
    assert [(a["delivered"], a["failed"]) for a in asked] == [(0, 1), (1, 0), (1, 0)]

    # the same from the command line (make dead-letters, make redrive), through the API
    monkeypatch.setenv("MARKETPLACE_API", marketplace.url)
    monkeypatch.setenv("ADMIN_PASSWORD", ADMIN_PASSWORD)
    capsys.readouterr()
    assert dead_letters.main(["list", "--function", "send_notifications", "--size", "100"]) == 0
    listed = capsys.readouterr().out
    assert letter["event_id"] in listed and "REDRIVEN" in listed
    assert dead_letters.main(["redrive", "--ids", letter["event_id"]]) == 0
    assert "1 delivered, 0 failed" in capsys.readouterr().out
    assert ledger(rt, letter["event_id"]) == mail


def test_redrive_needs_a_filter_and_an_admin(marketplace: Marketplace) -> None:
    for body in ({}, {"all": True, "function": "send_notifications"}, {"ids": []},
                 {"function": "Send Notifications"}, {"all": False}, {"everything": True}):
        answer = marketplace.admin.call("POST", REDRIVE, body)
        assert answer.status == 422, (body, answer.body)
        assert answer.headers["content-type"] == "application/problem+json"
    assert marketplace.admin.call("GET", "/admin/dead-letters?status=LOST").status == 422
    user = marketplace.register()
    assert user.call("GET", "/admin/dead-letters").status == 403
    assert user.call("POST", REDRIVE, {"all": True}).status == 403


def forge_dead_letter(marketplace: Marketplace, destination: str, booking_id: str) -> str:
    """What anyone able to write to the dead-letter topic can produce: any knativeerrordest."""
    event_id = str(uuid.uuid4())
    data = {"booking_id": booking_id, "user_id": str(uuid.uuid4()),
            "course_id": str(uuid.uuid4()), "ticket_id": str(uuid.uuid4()),
            "reason": "user_cancelled"}
    producer = KafkaProducer(bootstrap_servers=marketplace.stack.env["KAFKA_BOOTSTRAP_SERVERS"],
                             acks="all")
    producer.send(DEAD_LETTER_TOPIC, key=booking_id.encode(), value=json.dumps(data).encode(),
                  headers=[
                      ("content-type", b"application/json"), ("ce_specversion", b"1.0"),
                      ("ce_id", event_id.encode()), ("ce_source", b"/forged"),
                      ("ce_type", b"marketplace.booking.cancelled"),
                      ("ce_subject", booking_id.encode()),
                      ("ce_knativeerrordest", destination.encode()),
                      ("ce_knativeerrorcode", b"422"),
                      ("ce_knativeerrordata", base64.b64encode(b"<p>refused</p>"))]
                  ).get(timeout=30)
    producer.close()
    return event_id


def test_a_redrive_goes_to_our_function_never_to_the_recorded_address(
        marketplace: Marketplace) -> None:
    rt = marketplace.stack.runtime
    assert rt is not None
    listener = Listener()  # somewhere that is not our function: it must get nothing
    try:
        booking_id = str(uuid.uuid4())  # no such booking: cancel_open_payment changes nothing
        # a record "from" cancel_open_payment whose destination is the listener, and one naming
        # a function we do not have at all
        ours = forge_dead_letter(marketplace, f"{listener.url}/cancel-open-payment/",
                                 booking_id)
        foreign = forge_dead_letter(marketplace, f"{listener.url}/exfiltrate/", booking_id)
        listed = eventually(
            lambda: {i["event_id"]: i for i in letters(marketplace, "&status=DEAD")
                     if i["event_id"] in {ours, foreign}},
            lambda found: len(found) == 2, what="the forged dead letters listed")
        assert listed[ours]["function"] == "cancel_open_payment"
        assert listed[ours]["recorded_destination"] == f"{listener.url}/cancel-open-payment/"
        assert listed[foreign]["function"] == "exfiltrate"

        result = marketplace.admin.ok("POST", REDRIVE, {"ids": [ours, foreign]}, status=202)
        items = {i["event_id"]: i for i in result["items"]}
        assert (result["delivered"], result["failed"]) == (1, 1)
        assert (items[ours]["code"], items[ours]["delivered"], items[ours]["reason"]) == (
            200, True, None)
        assert (items[foreign]["code"], items[foreign]["delivered"]) == (0, False)
        assert "not one of our" in items[foreign]["reason"]
        # cancel_open_payment got the event, from the declared address; the listener got nothing
        assert ("cancel_open_payment", ours) in inbox_rows(rt, ours)
        assert inbox_rows(rt, foreign) == []
        assert listener.requests == []
        [still] = [i for i in letters(marketplace) if i["event_id"] == foreign]
        assert still["status"] == "DEAD" and "not one of our" in still["reason"]
    finally:
        listener.close()
