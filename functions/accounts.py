"""The HTTP function behind /auth: accounts, logins and their tokens.

A login is a family of refresh tokens. Each refresh token works once and is
replaced by the next; presenting a used one again means it was copied, so the
whole family is revoked. Registrations, logins and refreshes are rate-limited
per client address, and login attempts are counted per email and address
together and per address (`shared.edge.limits`), before any password is
hashed; a password is never hashed inside a database transaction.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated

import flask
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from shared.adapters.passwords import hash_password, matches
from shared.domain.events import UserRegistered
from shared.edge import limits, tokens
from shared.edge.api import Api, Caller, Email, Phone, Problem
from shared.edge.roles import SIGNED_IN, Role
from shared.runtime.bootstrap import runtime
from shared.runtime.config import settings
from shared.runtime.db import Tx
from shared.runtime.unit_of_work import UnitOfWork, unit_of_work

api = Api()

SOURCE = "/marketplace/functions/accounts"

# Compared exactly as it was registered: no stripping, whatever the model does to other text.
Password = Annotated[str, StringConstraints(min_length=8, max_length=128,
                                            strip_whitespace=False)]


class Register(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    email: Email
    password: Password
    full_name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    phone: Phone | None = None


class Login(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: Annotated[str, Field(max_length=320)]
    password: Annotated[str, Field(max_length=1024)]


class Refresh(BaseModel):
    model_config = ConfigDict(extra="forbid")
    refresh_token: Annotated[str, Field(min_length=1, max_length=200)]


class ChangePassword(BaseModel):
    model_config = ConfigDict(extra="forbid")
    old_password: Annotated[str, Field(max_length=1024)]
    new_password: Password


class Registered(BaseModel):
    user_id: uuid.UUID
    access_token: str
    refresh_token: str


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "bearer"
    expires_in: int


def create_account(uow: UnitOfWork, email: str, password_hash: str, full_name: str,
                   phone: str | None, role: Role) -> uuid.UUID | None:
    """Insert the account and emit user.registered; None when the email is taken."""
    user_id = uuid.uuid4()
    created = uow.tx.one(
        "INSERT INTO accounts (user_id, email, password_hash, full_name, phone, role)"
        " VALUES (:u, :e, :h, :n, :p, :r) ON CONFLICT DO NOTHING RETURNING registered_at",
        u=user_id, e=email, h=password_hash, n=full_name, p=phone, r=role,
    )
    if created is None:
        return None
    uow.emit(UserRegistered(
        user_id=user_id, email=email, full_name=full_name, phone=phone, role=role,  # type: ignore[arg-type]
        registered_at=created["registered_at"],
    ))
    return user_id


def issue_tokens(tx: Tx, user_id: uuid.UUID, role: Role,
                 family_id: uuid.UUID | None = None) -> TokenPair:
    """A new access token and the next refresh token of the login (a new login without one)."""
    family_id = family_id or uuid.uuid4()
    refresh = tokens.new_refresh_token()
    tx.execute(
        "INSERT INTO refresh_tokens (token_hash, user_id, family_id, expires_at)"
        " VALUES (:h, :u, :f, :exp)",
        h=tokens.digest(refresh), u=user_id, f=family_id,
        exp=datetime.now(UTC) + timedelta(seconds=settings().refresh_token_ttl_seconds),
    )
    return TokenPair(access_token=tokens.issue_access(user_id, role, family_id),
                     refresh_token=refresh, expires_in=settings().access_token_ttl_seconds)


def _limit(raw: flask.Request, name: str, subject: str | None = None) -> str:
    """Count the request against limit `name` (per client address unless `subject` is given);
    returns the client address."""
    rt = runtime()
    address = limits.client_address(raw, rt.settings)
    limits.check(rt.redis, rt.settings, name, address if subject is None else subject)
    return address


@api.route("POST", "/auth/register", status=201, errors=(409, 429, 503))
def register(body: Register, raw: flask.Request) -> Registered:
    """Open an account (role `user`) and log in."""
    _limit(raw, "REGISTRATIONS_PER_ADDRESS")
    password_hash = hash_password(body.password)
    with unit_of_work(SOURCE) as uow:
        user_id = create_account(uow, body.email, password_hash, body.full_name, body.phone,
                                 Role.USER)
        if user_id is None:
            raise Problem(409, "Conflict", "an account with this email already exists")
        pair = issue_tokens(uow.tx, user_id, Role.USER)
    return Registered(user_id=user_id, access_token=pair.access_token,
                      refresh_token=pair.refresh_token)


@api.route("POST", "/auth/login", errors=(401, 429, 503))
def login(body: Login, raw: flask.Request) -> TokenPair:
    """Log in with email and password; a wrong password and an unknown email look alike.

    Every attempt is counted before the password is checked, per email and
    address together (a stranger guessing the owner's password locks out only
    themselves) and per address (spraying many emails is slowed); a success
    forgives its email and address.
    """
    address = _limit(raw, "LOGINS_PER_ADDRESS")
    rt = runtime()
    pair_key = f"{body.email.strip().lower()}\n{address}"
    limits.check(rt.redis, rt.settings, "FAILED_LOGINS_PER_ACCOUNT_AND_ADDRESS", pair_key)
    limits.check(rt.redis, rt.settings, "FAILED_LOGINS_PER_ADDRESS", address)
    with unit_of_work(SOURCE) as uow:
        account = uow.tx.one(
            "SELECT user_id, password_hash, role FROM accounts WHERE lower(email) = lower(:e)",
            e=body.email.strip(),
        )
    if not matches(account["password_hash"] if account else None, body.password):
        raise Problem(401, "Unauthorized", "wrong email or password")
    assert account is not None
    limits.forgive(rt.redis, "FAILED_LOGINS_PER_ACCOUNT_AND_ADDRESS", pair_key)
    limits.forgive_one(rt.redis, "FAILED_LOGINS_PER_ADDRESS", address)
    with unit_of_work(SOURCE) as uow:
        return issue_tokens(uow.tx, account["user_id"], account["role"])


@api.route("POST", "/auth/refresh", errors=(401, 429))
def refresh(body: Refresh, raw: flask.Request) -> TokenPair:
    """Trade a refresh token for a new pair; the old one stops working."""
    _limit(raw, "REFRESHES_PER_ADDRESS")
    reused = False
    with unit_of_work(SOURCE) as uow:
        row = uow.tx.one(
            "SELECT r.user_id, r.family_id, r.expires_at, r.used_at, r.revoked_at, a.role"
            " FROM refresh_tokens r JOIN accounts a USING (user_id)"
            " WHERE r.token_hash = :h FOR UPDATE OF r",
            h=tokens.digest(body.refresh_token),
        )
        if row is None or row["revoked_at"] is not None or row["expires_at"] <= uow.now:
            raise Problem(401, "Unauthorized", "the refresh token is not valid")
        if row["used_at"] is not None:
            # Someone holds a copy: end the whole login, and commit that before answering.
            uow.tx.execute("UPDATE refresh_tokens SET revoked_at = now()"
                           " WHERE family_id = :f AND revoked_at IS NULL", f=row["family_id"])
            reused = True
        else:
            uow.tx.execute("UPDATE refresh_tokens SET used_at = now() WHERE token_hash = :h",
                           h=tokens.digest(body.refresh_token))
            pair = issue_tokens(uow.tx, row["user_id"], row["role"], row["family_id"])
    if reused:
        raise Problem(401, "Unauthorized",
                      "this refresh token was used before; the login has been ended")
    return pair


@api.route("POST", "/auth/logout", roles=SIGNED_IN, status=204)
def logout(caller: Caller) -> None:
    """End this login: its refresh token stops working."""
    with unit_of_work(SOURCE) as uow:
        uow.tx.execute("UPDATE refresh_tokens SET revoked_at = now()"
                       " WHERE family_id = :f AND revoked_at IS NULL",
                       f=caller.session_id)


@api.route("POST", "/auth/password", roles=SIGNED_IN, status=204, errors=(403, 409, 503))
def change_password(body: ChangePassword, caller: Caller) -> None:
    """Change the password; every other login of the account is ended."""
    with unit_of_work(SOURCE) as uow:
        account = uow.tx.one("SELECT password_hash FROM accounts WHERE user_id = :u",
                             u=caller.user_id)
    if not matches(account["password_hash"] if account else None, body.old_password):
        raise Problem(403, "Forbidden", "the old password is not right")
    new_hash = hash_password(body.new_password)
    with unit_of_work(SOURCE) as uow:
        # Only if nobody changed it meanwhile: the old password was checked against this one.
        changed = uow.tx.execute("UPDATE accounts SET password_hash = :h WHERE user_id = :u"
                                 " AND password_hash = :old", h=new_hash, u=caller.user_id,
                                 old=account["password_hash"] if account else "")
        if not changed:
            raise Problem(409, "Conflict", "the password was changed meanwhile; try again")
        uow.tx.execute("UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = :u"
                       " AND family_id <> :f AND revoked_at IS NULL",
                       u=caller.user_id, f=caller.session_id)


accounts = api.function("/auth")

