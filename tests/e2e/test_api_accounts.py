"""Accounts, tokens, roles and profiles through the HTTP API."""

from __future__ import annotations

import struct
import time
import uuid
import zlib

import jwt
import requests

from local.apiclient import Answer
from shared.edge.tokens import generate_keys
from tests.helpers.client import Client
from tests.helpers.marketplace import Marketplace
from tests.helpers.waiting import eventually


def png(width: int = 2, height: int = 2) -> bytes:
    """A real PNG image, built by hand."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def register(marketplace: Marketplace, phone: str | None = None
             ) -> tuple[Client, dict[str, str]]:
    email = f"acc-{uuid.uuid4().hex[:10]}@example.com"
    user = marketplace.register(email, "first password", "Grace Hopper", phone)
    return user, {"email": email, "password": "first password",
                  "refresh_token": user.refresh_token}


def profile_ready(user: Client) -> dict[str, object]:
    return eventually(lambda: user.call("GET", "/users/me"), lambda r: r.status == 200,
                      what="profile created").body  # type: ignore[no-any-return]


def test_register_twice_is_a_conflict_and_login_works(marketplace: Marketplace) -> None:
    _, account = register(marketplace)
    again = Client(marketplace.url).call("POST", "/auth/register", {
        "email": account["email"].upper(), "password": "whatever123", "full_name": "X"})
    assert again.status == 409
    answer = marketplace.login(account["email"], account["password"])
    assert answer.status == 200
    assert answer.body["token_type"] == "bearer" and answer.body["expires_in"] > 0


def test_wrong_password_and_unknown_email_look_alike(marketplace: Marketplace) -> None:
    _, account = register(marketplace)
    wrong = marketplace.login(account["email"], "not the password")
    unknown = marketplace.login(f"nobody-{uuid.uuid4().hex}@example.com", "whatever")
    assert wrong.status == unknown.status == 401
    assert wrong.body["detail"] == unknown.body["detail"]


def test_repeated_failed_logins_are_throttled(marketplace: Marketplace) -> None:
    _, account = register(marketplace)
    answers = [marketplace.login(account["email"], "wrong").status for _ in range(6)]
    assert answers == [401] * 5 + [429]
    throttled = marketplace.login(account["email"], account["password"])
    assert throttled.status == 429 and int(throttled.headers["retry-after"]) > 0


def test_refresh_rotates_and_reuse_ends_the_login(marketplace: Marketplace) -> None:
    _, account = register(marketplace)
    first = account["refresh_token"]
    second = marketplace.refresh(first)
    assert second.status == 200
    pair = second.body
    assert pair["refresh_token"] != first
    reused = marketplace.refresh(first)  # a copy is being used
    assert reused.status == 401
    # the whole login is over, including the token handed out after the copied one
    assert marketplace.refresh(pair["refresh_token"]).status == 401


def test_logout_ends_the_refresh_token(marketplace: Marketplace) -> None:
    user, account = register(marketplace)
    assert user.call("POST", "/auth/logout").status == 204
    assert marketplace.refresh(account["refresh_token"]).status == 401


def test_password_change_ends_other_logins(marketplace: Marketplace) -> None:
    user, account = register(marketplace)
    other = marketplace.login(account["email"], account["password"]).body
    assert user.call("POST", "/auth/password", {"old_password": "wrong one",
                                                "new_password": "second password"}
                     ).status == 403
    assert user.call("POST", "/auth/password", {"old_password": account["password"],
                                                "new_password": "second password"}
                     ).status == 204
    assert marketplace.refresh(other["refresh_token"]).status == 401
    assert marketplace.refresh(account["refresh_token"]).status == 200  # this login stays
    assert marketplace.login(account["email"], account["password"]).status == 401
    assert marketplace.login(account["email"], "second password").status == 200


def test_bad_tokens_are_401(marketplace: Marketplace) -> None:
    user, account = register(marketplace)
    env = marketplace.stack.env
    key, kid = env["JWT_PRIVATE_KEY"], {"kid": env["JWT_KEY_ID"]}
    claims = jwt.decode(user.token, options={"verify_signature": False})
    expired = jwt.encode({**claims, "exp": int(time.time()) - 10}, key, "EdDSA", headers=kid)
    tampered = jwt.encode({**claims, "role": "admin"}, generate_keys()["JWT_PRIVATE_KEY"],
                          "EdDSA", headers=kid)
    unknown_kid = jwt.encode(claims, key, "EdDSA", headers={"kid": "retired"})
    for token in (expired, tampered, unknown_kid, account["refresh_token"], "", "not.a.jwt"):
        caller = Client(marketplace.url, token)
        answer = caller.call("GET", "/users/me", headers={} if token else {"Authorization": ""})
        assert answer.status == 401, token
        assert answer.headers["content-type"] == "application/problem+json"


def test_profile_is_created_by_the_reaction_and_can_change(marketplace: Marketplace) -> None:
    user, account = register(marketplace, phone="+44 20 7946 0000")
    profile = profile_ready(user)
    assert profile["email"] == account["email"] and profile["role"] == "user"
    assert profile["phone"] == "+44 20 7946 0000" and profile["avatar_url"] is None
    changed = user.ok("PATCH", "/users/me", {"bio": "Compilers.", "phone": None})
    assert changed["bio"] == "Compilers." and changed["phone"] is None
    assert changed["full_name"] == "Grace Hopper"
    cleared = user.call("PATCH", "/users/me", {"full_name": None})  # never null, documented so
    assert cleared.status == 422 and cleared.body["errors"][0]["field"] == "full_name"
    assert user.call("PATCH", "/users/me", {"role": "admin"}).status == 422


def test_avatar_is_stored_in_s3_and_replaced(marketplace: Marketplace) -> None:
    user, _ = register(marketplace)
    profile_ready(user)

    def upload(body: bytes, media_type: str = "image/png") -> Answer:
        return user.send("PUT", "/users/me/avatar", body, media_type)

    first = upload(png())
    assert first.status == 200, first.body
    url = first.body["avatar_url"]
    assert url.startswith(marketplace.stack.env["AWS_ENDPOINT_URL"])
    assert requests.get(url, timeout=30).content == png()
    second = upload(png(3, 1))
    assert second.status == 200
    assert requests.get(second.body["avatar_url"], timeout=30).content == png(3, 1)
    assert requests.get(url, timeout=30).status_code == 404  # the old one is gone

    assert upload(b"just some text, honestly").status == 422
    assert upload(b"").status == 400
    assert upload(png() + b"\0" * (2 * 1024 * 1024)).status == 413
    assert upload(png(), "text/plain").status == 415
    assert user.ok("GET", "/users/me")["avatar_url"] == second.body["avatar_url"]


def test_roles_are_enforced(marketplace: Marketplace) -> None:
    user, account = register(marketplace)
    other_author, other_account = register(marketplace)
    profile_ready(user)
    profile_ready(other_author)
    course = {"title": "Mine", "price_cents": 100, "currency": "EUR",
              "starts_at": "2037-05-01T10:00:00Z", "capacity": 2}
    assert user.call("POST", "/courses", course).status == 403
    assert user.call("GET", "/users").status == 403
    assert user.call("PUT", f"/users/{user.user_id}/role", {"role": "admin"}).status == 403
    for who in (user.user_id, other_author.user_id):
        assert marketplace.admin.ok("PUT", f"/users/{who}/role", {"role": "author"})[
            "role"] == "author"
    # the new role comes with the next token
    user.token = marketplace.login(account["email"], account["password"]).body["access_token"]
    other_author.token = marketplace.login(other_account["email"],
                               other_account["password"]).body["access_token"]
    mine = user.ok("POST", "/courses", course, status=201)
    assert other_author.call("PATCH", f"/courses/{mine['course_id']}",
                             {"title": "Theirs"}).status == 403
    assert other_author.call("POST", f"/courses/{mine['course_id']}/deactivate"
                             ).status == 403
    assert marketplace.admin.ok("PATCH", f"/courses/{mine['course_id']}",
                                {"title": "Renamed by admin"})["title"] == "Renamed by admin"
    assert marketplace.admin.call("PUT", f"/users/{uuid.uuid4()}/role",
                                  {"role": "author"}).status == 404


def test_admin_lists_users_with_filters(marketplace: Marketplace) -> None:
    tag = uuid.uuid4().hex[:8]
    users = []
    for i in range(3):
        users.append(marketplace.register(f"list-{tag}-{i}@example.com", "list password",
                                          f"Lister {i}"))
    for user in users:
        profile_ready(user)
    page = marketplace.admin.ok("GET", f"/users?email={tag}&sort=email&size=2")
    assert page["total"] == 3 and page["size"] == 2 and page["page"] == 1
    assert [p["email"] for p in page["items"]] == [f"list-{tag}-0@example.com",
                                                  f"list-{tag}-1@example.com"]
    second = marketplace.admin.ok("GET", f"/users?email={tag}&sort=email&size=2&page=2")
    assert [p["email"] for p in second["items"]] == [f"list-{tag}-2@example.com"]
    later = marketplace.admin.ok("GET", f"/users?email={tag}&registered_from=2999-01-01T00:00:00Z")
    assert later["total"] == 0
    for bad in ("sort=password", "size=0", "size=101", "page=0", "registered_from=yesterday",
                "colour=blue"):
        answer = marketplace.admin.call("GET", f"/users?{bad}")
        assert answer.status == 422, bad
        assert answer.body["errors"][0]["field"] == bad.split("=")[0]
