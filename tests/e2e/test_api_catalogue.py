"""The course catalogue, booking lists and error answers through the HTTP API."""

from __future__ import annotations

import uuid

from tests.helpers.client import Client
from tests.helpers.marketplace import Marketplace


def publish(marketplace: Marketplace, **fields: object) -> dict[str, object]:
    body = {"title": "Untitled", "description": "", "price_cents": 1000, "currency": "EUR",
            "starts_at": "2037-06-01T09:00:00Z", "capacity": 2, **fields}
    result: dict[str, object] = marketplace.admin.ok("POST", "/courses", body, status=201)
    return result


def test_courses_are_searched_filtered_sorted_and_paged(marketplace: Marketplace) -> None:
    tag = uuid.uuid4().hex[:8]
    cheap = publish(marketplace, title=f"Cheap {tag}", price_cents=500,
                    starts_at="2037-07-01T09:00:00Z")
    dear = publish(marketplace, title=f"Dear {tag}", price_cents=90_000,
                   starts_at="2037-08-01T09:00:00Z")
    hidden = publish(marketplace, title="Elsewhere", description=f"about {tag}",
                     price_cents=2000, starts_at="2037-09-01T09:00:00Z")
    anyone = Client(marketplace.url)
    found = anyone.ok("GET", f"/courses?q={tag}&sort=-price_cents")
    assert [c["course_id"] for c in found["items"]] == [
        dear["course_id"], hidden["course_id"], cheap["course_id"]]
    assert found["total"] == 3 and found["items"][0]["available"] == 2
    priced = anyone.ok("GET", f"/courses?q={tag}&price_min=1000&price_max=50000")
    assert [c["course_id"] for c in priced["items"]] == [hidden["course_id"]]
    window = anyone.ok("GET", f"/courses?q={tag}&starts_from=2037-07-15T00:00:00Z"
                       "&starts_to=2037-08-15T00:00:00%2B00:00")
    assert [c["course_id"] for c in window["items"]] == [dear["course_id"]]
    paged = anyone.ok("GET", f"/courses?q={tag}&sort=starts_at&size=1&page=2")
    assert [c["course_id"] for c in paged["items"]] == [dear["course_id"]]
    assert paged["total"] == 3
    assert anyone.ok("GET", "/courses?q=%25_%5C")["total"] == 0  # wildcards are literal
    for bad in ("sort=title", "status=OPEN", "price_min=-1", "size=500", "starts_from=soon",
                "starts_to=0.5", "starts_from=1700000000", "starts_to=2037-07-15T00:00:00",
                "price_min=1253734888726236233728", "price_max=9223372036854775808"):
        answer = anyone.call("GET", f"/courses?{bad}")
        assert answer.status == 422, bad
        assert [e["field"] for e in answer.body["errors"]] == [bad.split("=")[0]], answer.body
    # a bound past what a date-time can be in UTC finds what the range's end finds
    assert anyone.ok("GET", f"/courses?q={tag}&starts_to=9999-12-31T23:00:00-19:17")["total"] == 3


def test_what_a_course_cannot_be_is_a_422_naming_the_field(marketplace: Marketplace) -> None:
    good = {"title": "Bounds", "price_cents": 86753.0, "currency": "JPY",
            "starts_at": "2037-01-01T09:00:00+14:00", "capacity": 1}
    course = marketplace.admin.ok("POST", "/courses", good, status=201)
    assert (course["price_cents"], course["starts_at"]) == (86753, "2036-12-31T19:00:00Z")
    for field, value in (("starts_at", 0), ("starts_at", "1970-01-01T00:00:00Z"),
                         ("starts_at", "9999-12-31T23:00:00-05:00"), ("currency", "AAA"),
                         ("currency", "XTS"), ("price_cents", 100_000_001),
                         ("price_cents", 2**63), ("price_cents", "5"), ("price_cents", 0.5),
                         ("capacity", 10_001), ("capacity", True), ("title", "   ")):
        answer = marketplace.admin.call("POST", "/courses", {**good, field: value})
        assert answer.status == 422, (field, value, answer.body)
        assert [e["field"] for e in answer.body["errors"]] == [field], answer.body
    cid = course["course_id"]
    for field, value in (("starts_at", "2001-01-01T00:00:00Z"), ("currency", None),
                         ("price_cents", None), ("currency", "euro")):
        answer = marketplace.admin.call("PATCH", f"/courses/{cid}", {field: value})
        assert answer.status == 422, (field, value, answer.body)
        assert [e["field"] for e in answer.body["errors"]] == [field], answer.body


def test_course_changes_and_deactivation(marketplace: Marketplace) -> None:
    course = publish(marketplace, capacity=3)
    cid = course["course_id"]
    changed = marketplace.admin.ok("PATCH", f"/courses/{cid}", {"price_cents": 2500,
                                                                 "title": "Renamed"})
    assert changed["price_cents"] == 2500 and changed["title"] == "Renamed"
    assert marketplace.admin.call("PATCH", f"/courses/{cid}", {"capacity": 10}).status == 422
    assert marketplace.admin.call("PATCH", f"/courses/{cid}", {"title": None}).status == 422
    user = marketplace.register()
    booking = user.book(str(cid))
    held = user.wait_status(booking, "AWAITING_PAYMENT")
    assert held["amount_cents"] == 2500  # the price when the ticket was reserved
    off = marketplace.admin.ok("POST", f"/courses/{cid}/deactivate")
    assert off["status"] == "INACTIVE"
    assert marketplace.admin.call("POST", f"/courses/{cid}/deactivate").status == 409
    refused = user.call("POST", "/bookings", {"course_id": str(cid)})  # not on sale
    assert refused.status == 409 and "not on sale" in refused.body["detail"]
    inactive = Client(marketplace.url).ok("GET", "/courses?status=INACTIVE&size=100")
    assert cid in [c["course_id"] for c in inactive["items"]]


def test_users_list_their_own_bookings_and_admins_filter(marketplace: Marketplace) -> None:
    course = publish(marketplace, capacity=1)
    alice, bob = marketplace.register(), marketplace.register()
    first = alice.book(str(course["course_id"]))
    alice.wait_status(first, "AWAITING_PAYMENT")
    second = bob.book(str(course["course_id"]))
    bob.wait_status(second, "REJECTED")
    mine = alice.ok("GET", "/bookings")
    assert [b["booking_id"] for b in mine["items"]] == [first] and mine["total"] == 1
    assert alice.call("GET", f"/bookings?user_id={bob.user_id}").status == 403
    by_course = marketplace.admin.ok("GET", f"/bookings?course_id={course['course_id']}")
    assert {b["booking_id"] for b in by_course["items"]} == {first, second}
    rejected = marketplace.admin.ok(
        "GET", f"/bookings?course_id={course['course_id']}&status=REJECTED")
    assert [b["booking_id"] for b in rejected["items"]] == [second]
    assert marketplace.admin.ok("GET", f"/bookings?user_id={bob.user_id}")["total"] == 1
    assert alice.call("GET", "/bookings?status=LOST").status == 422


def test_malformed_input_is_a_4xx_problem(marketplace: Marketplace) -> None:
    user = marketplace.register()
    cases = [
        ("POST", "/bookings", b"{not json", 400),
        ("POST", "/bookings", b"[1, 2]", 422),
        ("POST", "/bookings", b"", 400),
        ("POST", "/auth/register", b'{"email": "x@y.z", "password": 12345678, "full_name": "A"}',
         422),
        ("POST", "/auth/register", b'{"email": "not-an-email", "password": "12345678",'
         b' "full_name": "A"}', 422),
        ("POST", "/auth/register", b'{"email": "a@b.cd", "password": "short", "full_name": "A"}',
         422),
        ("POST", "/auth/register", b'{"email": "a@b.cd", "password": "12345678",'
         b' "full_name": "A\\u0000B"}', 422),
        ("POST", "/courses", b'{"title": "x"}', 403),
        ("GET", "/nowhere", b"", 404),
        ("GET", "/users/%0A/role", b"", 404),  # no rule of the function's own app matches
        ("PUT", "/users/%0A/role", b"{}", 404),
        ("DELETE", "/bookings", b"", 405),
        ("POST", "/openapi.json", b"", 405),
    ]
    for method, path, body, status in cases:
        answer = user.send(method, path, body, "application/json")
        assert answer.status == status, (method, path, body, answer.body)
        assert answer.headers["content-type"] == "application/problem+json", path
        problem = answer.body
        assert {"type", "title", "status", "detail"} <= set(problem) and problem["status"] == status
    bad = marketplace.admin.call("POST", "/courses", {
        "title": "T", "price_cents": "ten", "currency": "euro", "starts_at": "2027-01-01",
        "capacity": 0})
    assert bad.status == 422
    fields = {e["field"] for e in bad.body["errors"]}
    assert fields == {"price_cents", "currency", "starts_at", "capacity"}
