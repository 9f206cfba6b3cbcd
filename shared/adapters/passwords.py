"""Password hashes (argon2id), with argon2 loaded on the first hash or check.

Only `accounts` hashes passwords (and the seeding tools), and even it does
not need argon2 to answer a refresh or a logout.

Each hash or check takes argon2's 64 MiB for a moment, so at most
`PASSWORD_HASH_CONCURRENCY` (default 2) run at once per process: eight
concurrent logins would otherwise need more memory than the accounts pod has.
A request that waits longer than `WAIT_SECONDS` for its turn is answered 503
with `Retry-After` (`HashingBusy` is transient).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

from shared.runtime.errors import TransientError

WAIT_SECONDS = 2.0
_turns = threading.BoundedSemaphore(int(os.environ.get("PASSWORD_HASH_CONCURRENCY") or 2))


class HashingBusy(TransientError):
    """Every password-hashing turn is taken: this host is busy; try again shortly."""


@contextmanager
def _turn() -> Iterator[None]:
    if not _turns.acquire(timeout=WAIT_SECONDS):
        raise HashingBusy("too many password checks at once")
    try:
        yield
    finally:
        _turns.release()


@cache
def _hasher() -> Any:
    from argon2 import PasswordHasher

    return PasswordHasher()


@cache
def _dummy_hash() -> str:
    """Checked against when the account is unknown, so both failures take as long."""
    return str(_hasher().hash("not-a-real-password"))


def hash_password(password: str) -> str:
    with _turn():
        return str(_hasher().hash(password))


def matches(stored: str | None, password: str) -> bool:
    """Whether `password` is the one `stored` was made from; None (no account) never matches."""
    from argon2.exceptions import InvalidHashError, VerificationError

    against = stored if stored is not None else _dummy_hash()
    with _turn():
        try:
            _hasher().verify(against, password)
        except (VerificationError, InvalidHashError):
            return False
    return stored is not None
