"""What `make run` puts in a fresh stack: the admin account and one published course."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime, timedelta

from functions.accounts import create_account
from functions.catalogue import NewCourse, create_course
from shared.adapters.passwords import hash_password
from shared.edge.roles import Role
from shared.runtime.bootstrap import Runtime
from shared.runtime.unit_of_work import unit_of_work

SOURCE = "/marketplace/local/seed"


def seed_admin(rt: Runtime, email: str, password: str | None) -> tuple[uuid.UUID, str | None]:
    """The admin account; returns its id and the password when this call generated it."""
    generated = None
    if not password:
        password = generated = secrets.token_urlsafe(12)
    with unit_of_work(SOURCE, rt) as uow:
        existing = uow.tx.one("SELECT user_id FROM accounts WHERE lower(email) = lower(:e)",
                              e=email)
        if existing is not None:
            uow.tx.execute("UPDATE accounts SET role = 'admin' WHERE user_id = :u",
                           u=existing["user_id"])
            return existing["user_id"], None
        user_id = create_account(uow, email, hash_password(password), "Marketplace admin", None,
                                 Role.ADMIN)
        assert user_id is not None
    return user_id, generated


def seed_demo_course(rt: Runtime, author_id: uuid.UUID) -> uuid.UUID | None:
    """One published course with 5 tickets, unless a course exists already."""
    with unit_of_work(SOURCE, rt) as uow:
        if uow.tx.scalar("SELECT count(*) FROM courses"):
            return None
        course = create_course(uow, author_id, NewCourse(
            title="Event-driven systems with Python",
            description="Sagas, outboxes and idempotent consumers, by building a marketplace.",
            price_cents=4900, currency="EUR",
            starts_at=(datetime.now(UTC) + timedelta(days=14)).replace(microsecond=0),
            capacity=5,
        ))
        return uuid.UUID(course["course_id"])

