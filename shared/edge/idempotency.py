"""`Idempotency-Key`: a retried request gets the first answer instead of a second effect.

A key belongs to its user. The first request with a key stores its answer;
a request with the same key and the same fingerprint (operation and body)
gets that answer back; the same key with another request is a 422. Where the
effect is one transaction the key is stored in it (`claim`), so a concurrent
retry waits on the row and then reads the first answer; where it is not (a
payment, whose provider calls happen outside any transaction), the answer is
looked up first (`first_answer`) and claimed after, and the effect
itself is idempotent by other means.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import flask

from shared.edge.api import Problem
from shared.runtime.db import Tx

Answer = tuple[int, Any]


def key_of(raw: flask.Request) -> str | None:
    key = raw.headers.get("Idempotency-Key")
    if key is not None and (not 1 <= len(key) <= 200 or not key.isprintable()):
        raise Problem(400, "Bad Request", "Idempotency-Key must be 1..200 printable characters")
    return key


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()


def first_answer(tx: Tx, user_id: uuid.UUID, key: str, print_: str) -> Answer | None:
    """The answer stored for this key, or None; a 422 when the key came with another request."""
    first = tx.one("SELECT request_hash, status_code, response FROM idempotency_keys"
                   " WHERE user_id = :u AND key = :k", u=user_id, k=key)
    if first is None:
        return None
    if first["request_hash"] != print_:
        raise Problem(422, "Idempotency Key Reused",
                      "this Idempotency-Key was used with a different request")
    return first["status_code"], first["response"]


def claim(tx: Tx, user_id: uuid.UUID, key: str, print_: str, answer: Answer) -> Answer | None:
    """Store `answer` for the key; returns the first answer instead if the key was used."""
    fresh = tx.execute(
        "INSERT INTO idempotency_keys (user_id, key, request_hash, status_code, response)"
        " VALUES (:u, :k, :h, :s, CAST(:r AS jsonb)) ON CONFLICT DO NOTHING",
        u=user_id, k=key, h=print_, s=answer[0], r=json.dumps(answer[1], default=str))
    return None if fresh else first_answer(tx, user_id, key, print_)
