"""The HTTP function behind /users: a user's own profile and avatar, and the admin's views.

Profiles are created by `create_profile` when user.registered arrives, so a
profile may be a moment behind its account; until then /users/me is a 404
with Retry-After.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias

import flask
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from shared.adapters import avatars
from shared.domain.events import UserUpdated
from shared.edge.api import (
    Api,
    Caller,
    Omittable,
    Page,
    PageQuery,
    Phone,
    Problem,
    not_found,
    page_of,
    select_page,
    sort_clause,
)
from shared.edge.roles import ADMINS, SIGNED_IN, Role
from shared.runtime.db import Row
from shared.runtime.unit_of_work import UnitOfWork, unit_of_work

api = Api()
SOURCE = "/marketplace/functions/users"
# A role as its string in a Literal: the document shows it inline under the field's
# title (an enum would be a component of its own), and a bad one's 422 names the strings.
if TYPE_CHECKING:
    RoleName: TypeAlias = Role
else:
    RoleName = Literal[tuple(role.value for role in Role)]


class Profile(BaseModel):
    user_id: uuid.UUID
    email: str
    full_name: str
    phone: str | None
    bio: str | None
    avatar_url: str | None
    role: RoleName
    registered_at: datetime


class ProfileChange(BaseModel):
    """A field left out is kept; `phone` and `bio` are cleared by null, `full_name` never is."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    full_name: Omittable[Annotated[str, StringConstraints(min_length=1, max_length=200)]] = None
    phone: Phone | None = None
    bio: Annotated[str, StringConstraints(max_length=2000)] | None = None


class RoleChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: RoleName


class UserQuery(PageQuery):
    email: Annotated[str, Field(max_length=320)] | None = None
    registered_from: AwareDatetime | None = None
    registered_to: AwareDatetime | None = None
    sort: Literal["registered_at", "-registered_at", "email", "-email",
                  "full_name", "-full_name"] = "-registered_at"


def profile_of(row: Row) -> Profile:
    return Profile.model_validate(row)


def _profile(uow: UnitOfWork, user_id: uuid.UUID, lock: str = "") -> Row:
    row = uow.tx.one(f"SELECT * FROM profiles WHERE user_id = :u {lock}", u=user_id)
    if row is None:
        raise Problem(404, "Not Found", "the profile is not there yet; try again in a moment",
                      headers={"Retry-After": "1"})
    return row


def _updated(uow: UnitOfWork, row: Row) -> Profile:
    uow.emit(UserUpdated(user_id=row["user_id"], full_name=row["full_name"], phone=row["phone"],
                         bio=row["bio"], avatar_url=row["avatar_url"], role=row["role"]))
    return profile_of(row)


@api.route("GET", "/users/me", roles=SIGNED_IN, errors=(404,))
def my_profile(caller: Caller) -> Profile:
    """The caller's profile."""
    with unit_of_work(SOURCE) as uow:
        return profile_of(_profile(uow, caller.user_id))


@api.route("PATCH", "/users/me", roles=SIGNED_IN, errors=(404,))
def change_profile(body: ProfileChange, caller: Caller) -> Profile:
    """Change the caller's name, phone or bio (phone and bio set to null are cleared)."""
    changes = {name: getattr(body, name) for name in body.model_fields_set}
    with unit_of_work(SOURCE) as uow:
        _profile(uow, caller.user_id, "FOR UPDATE")
        if not changes:
            return profile_of(_profile(uow, caller.user_id))
        sets = ", ".join(f"{name} = :{name}" for name in changes)
        row = uow.tx.one(f"UPDATE profiles SET {sets}, updated_at = now() WHERE user_id = :u"
                         " RETURNING *", u=caller.user_id, **changes)
        assert row is not None
        if "full_name" in changes or "phone" in changes:
            uow.tx.execute("UPDATE accounts SET full_name = :n, phone = :p WHERE user_id = :u",
                           n=row["full_name"], p=row["phone"], u=caller.user_id)
        return _updated(uow, row)


@api.route("PUT", "/users/me/avatar", roles=SIGNED_IN, raw_body=avatars.MEDIA_TYPES,
           errors=(400, 404, 413, 415, 422))
def upload_avatar(caller: Caller, raw: flask.Request) -> Profile:
    """Replace the caller's avatar with a PNG or JPEG image of at most 2 MiB."""
    image = avatars.read_image(raw)
    user_id = caller.user_id
    stored = avatars.store(user_id, image)
    try:
        with unit_of_work(SOURCE) as uow:
            old = _profile(uow, user_id, "FOR UPDATE")
            row = uow.tx.one("UPDATE profiles SET avatar_key = :k, avatar_url = :url,"
                             " updated_at = now() WHERE user_id = :u RETURNING *",
                             k=stored.key, url=stored.url, u=user_id)
            assert row is not None
            profile = _updated(uow, row)
    except BaseException:
        avatars.delete(stored.key)
        raise
    if old["avatar_key"]:
        avatars.delete(old["avatar_key"])
    return profile


@api.route("GET", "/users", roles=ADMINS)
def list_users(query: UserQuery) -> Page:
    """Profiles, filtered by email (a part of it) and registration time, sorted and paged."""
    where, params = [], dict[str, Any]()
    if query.email:
        where.append("lower(email) LIKE :email ESCAPE '\\'")
        escaped = query.email.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        params["email"] = f"%{escaped}%"
    if query.registered_from:
        where.append("registered_at >= :rfrom")
        params["rfrom"] = query.registered_from
    if query.registered_to:
        where.append("registered_at < :rto")
        params["rto"] = query.registered_to
    with unit_of_work(SOURCE) as uow:
        rows, total = select_page(uow.tx, "profiles", where, params,
                                  sort_clause(query.sort, "user_id"), query)
    return page_of([profile_of(r).model_dump(mode="json") for r in rows], query, total)


@api.route("PUT", "/users/<uuid:user_id>/role", roles=ADMINS, errors=(404,))
def change_role(user_id: uuid.UUID, body: RoleChange) -> Profile:
    """Make a user an author (or any role); takes effect at their next login or refresh."""
    with unit_of_work(SOURCE) as uow:
        if not uow.tx.execute("UPDATE accounts SET role = :r WHERE user_id = :u",
                              r=body.role, u=user_id):
            raise not_found("user")
        row = uow.tx.one("UPDATE profiles SET role = :r, updated_at = now() WHERE user_id = :u"
                         " RETURNING *", r=body.role, u=user_id)
        if row is None:
            raise Problem(404, "Not Found", "the profile is not there yet; try again in a moment",
                          headers={"Retry-After": "1"})
        return _updated(uow, row)


users = api.function("/users")
