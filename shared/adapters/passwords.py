"""Password hashes (argon2id), with argon2 loaded on the first hash or check.

Only `accounts` hashes passwords (and the seeding tools), and even it does
not need argon2 to answer a refresh or a logout.
"""

from __future__ import annotations

from functools import cache
from typing import Any


@cache
def _hasher() -> Any:
    from argon2 import PasswordHasher

    return PasswordHasher()


@cache
def _dummy_hash() -> str:
    """Checked against when the account is unknown, so both failures take as long."""
    return str(_hasher().hash("not-a-real-password"))


def hash_password(password: str) -> str:
    return str(_hasher().hash(password))


def matches(stored: str | None, password: str) -> bool:
    """Whether `password` is the one `stored` was made from; None (no account) never matches."""
    from argon2.exceptions import InvalidHashError, VerificationError

    try:
        _hasher().verify(stored if stored is not None else _dummy_hash(), password)
    except (VerificationError, InvalidHashError):
        return False
    return stored is not None
