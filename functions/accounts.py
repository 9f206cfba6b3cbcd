"""The HTTP function behind /auth: register and log in."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated

import flask
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from shared import tokens
from shared.db import Tx
from shared.events import UserRegistered
from shared.http import Api, Email, Problem, Request, endpoint
from shared.runtime import UnitOfWork, unit_of_work

api = Api()
hasher = PasswordHasher()
# Verified against when the email is unknown, so both failures take as long.
_DUMMY_HASH = hasher.hash("not-a-real-password")
SOURCE = "/marketplace/functions/accounts"

Password = Annotated[str, StringConstraints(min_length=8, max_length=128)]


class Register(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    email: Email
    password: Password
    full_name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    phone: Annotated[str, StringConstraints(pattern=r"^\+?[0-9 ()-]{5,20}$")] | None = None


class Login(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: Annotated[str, Field(max_length=320)]
    password: Annotated[str, Field(max_length=1024)]


def create_account(uow: UnitOfWork, email: str, password: str, full_name: str,
                   phone: str | None, role: str) -> uuid.UUID | None:
    """Insert the account and emit user.registered; None when the email is taken."""
    user_id = uuid.uuid4()
    created = uow.tx.one(
        "INSERT INTO accounts (user_id, email, password_hash, full_name, phone, role)"
        " VALUES (:u, :e, :h, :n, :p, :r) ON CONFLICT DO NOTHING RETURNING registered_at",
        u=user_id, e=email, h=hasher.hash(password), n=full_name, p=phone, r=role,
    )
    if created is None:
        return None
    uow.emit(UserRegistered(
        user_id=user_id, email=email, full_name=full_name, phone=phone, role=role,  # type: ignore[arg-type]
        registered_at=created["registered_at"],
    ))
    return user_id


def issue_tokens(tx: Tx, user_id: uuid.UUID, role: str,
                 family_id: uuid.UUID | None = None) -> dict[str, object]:
    from shared.config import settings

    refresh = tokens.new_refresh_token()
    ttl = settings().refresh_token_ttl_seconds
    tx.execute(
        "INSERT INTO refresh_tokens (token_hash, user_id, family_id, expires_at)"
        " VALUES (:h, :u, :f, :exp)",
        h=tokens.digest(refresh), u=user_id, f=family_id or uuid.uuid4(),
        exp=datetime.now(UTC) + timedelta(seconds=ttl),
    )
    return {
        "access_token": tokens.issue_access(user_id, role),
        "refresh_token": refresh,
        "token_type": "bearer",
        "expires_in": settings().access_token_ttl_seconds,
    }


@api.route("POST", "/auth/register", body=Register, status=201)
def register(request: Request) -> object:
    body: Register = request.body
    with unit_of_work(SOURCE) as uow:
        user_id = create_account(uow, body.email, body.password, body.full_name, body.phone,
                                 "user")
        if user_id is None:
            raise Problem(409, "Conflict", "an account with this email already exists")
        issued = issue_tokens(uow.tx, user_id, "user")
    return {"user_id": str(user_id), "access_token": issued["access_token"],
            "refresh_token": issued["refresh_token"]}


@api.route("POST", "/auth/login", body=Login)
def login(request: Request) -> object:
    body: Login = request.body
    with unit_of_work(SOURCE) as uow:
        account = uow.tx.one(
            "SELECT user_id, password_hash, role FROM accounts WHERE lower(email) = lower(:e)",
            e=body.email,
        )
        try:
            hasher.verify(account["password_hash"] if account else _DUMMY_HASH, body.password)
        except (VerificationError, InvalidHashError):
            account = None
        if account is None:
            raise Problem(401, "Unauthorized", "wrong email or password")
        return issue_tokens(uow.tx, account["user_id"], account["role"])


@endpoint("/auth")
def accounts(request: flask.Request) -> flask.Response:
    return api.dispatch(request)
