"""Rate limits for hostile clients: counted atomically in Redis, answered 429 before any work.

Each limit is a fixed window: the first request of a window creates its
counter with the window's expiry, in the same MULTI/EXEC as the count, so no
counter ever lives without an expiry and two requests at once are both
counted. A limit is checked before anything is written or hashed.

The request limits (bookings, registrations, logins, refreshes) follow
`RATE_LIMITS` (off for a load test on one machine, where every client shares
one address); the failed-login throttle does not, since it guards accounts,
not capacity. Each limit is a setting `RATE_LIMIT_<NAME>=COUNT/SECONDS`.

The client's address is the socket's peer, unless that peer is a proxy we
were told to trust (`TRUSTED_PROXIES`: the Ingress), in which case it is the
right-most address of `X-Forwarded-For` that is not itself a trusted proxy. A
client that sends its own `X-Forwarded-For` straight to us is not believed.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

import flask

from shared.edge.api import Problem
from shared.runtime.config import Settings

PREFIX = "marketplace:limit:"


@dataclass(frozen=True)
class Limit:
    name: str
    count: int
    seconds: int
    always: bool = False  # on whatever RATE_LIMITS says (the failed-login throttle)


DEFAULTS = (
    Limit("BOOKINGS_PER_USER", 30, 60),
    Limit("BOOKINGS_PER_ADDRESS", 120, 60),
    Limit("REGISTRATIONS_PER_ADDRESS", 20, 3600),
    Limit("LOGINS_PER_ADDRESS", 30, 60),
    Limit("REFRESHES_PER_ADDRESS", 60, 60),
    # Guessing one account's password: a stranger elsewhere does not lock its owner out.
    Limit("FAILED_LOGINS_PER_ACCOUNT_AND_ADDRESS", 5, 15 * 60, always=True),
    # Spraying many accounts from one address.
    Limit("FAILED_LOGINS_PER_ADDRESS", 20, 15 * 60, always=True),
)


@cache
def configured() -> dict[str, Limit]:
    """The limits, each overridable by `RATE_LIMIT_<NAME>=COUNT/SECONDS`."""
    limits = {}
    for limit in DEFAULTS:
        raw = os.environ.get(f"RATE_LIMIT_{limit.name}", "").strip()
        if raw:
            try:
                count, seconds = (int(part) for part in raw.split("/"))
            except ValueError as exc:
                raise RuntimeError(f"RATE_LIMIT_{limit.name} must be COUNT/SECONDS, got {raw!r}"
                                   ) from exc
            limit = Limit(limit.name, count, seconds, limit.always)
        limits[limit.name] = limit
    return limits


@cache
def _networks(trusted: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple(ipaddress.ip_network(t, strict=False) for t in trusted)


def _trusted(address: str, networks: Iterable[Any]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(raw: flask.Request, settings: Settings) -> str:
    """Who is asking: the peer, or behind a trusted proxy the address it forwarded for."""
    peer = raw.remote_addr or "unknown"
    networks = _networks(settings.trusted_proxies)
    if not networks or not _trusted(peer, networks):
        return peer
    hops = [h.strip() for h in ",".join(raw.headers.getlist("X-Forwarded-For")).split(",")]
    for hop in reversed([h for h in hops if h]):
        if not _trusted(hop, networks):
            return hop
    return peer


def _key(name: str, subject: str) -> str:
    return PREFIX + name + ":" + hashlib.sha256(subject.encode()).hexdigest()[:32]


def count(redis: Any, name: str, subject: str) -> tuple[int, int]:
    """Count one more for `subject` under limit `name`; returns (count, seconds left)."""
    limit = configured()[name]
    key = _key(name, subject)
    with redis.pipeline(transaction=True) as pipe:
        pipe.set(key, 0, ex=limit.seconds, nx=True)
        pipe.incr(key)
        pipe.ttl(key)
        _, total, left = pipe.execute()
    return int(total), max(1, int(left))


def check(redis: Any, settings: Settings, name: str, subject: str) -> None:
    """Count a request against a limit; over it, a 429 with `Retry-After`."""
    limit = configured()[name]
    if not (limit.always or settings.rate_limits):
        return
    total, left = count(redis, name, subject)
    if total > limit.count:
        raise too_many(left, f"too many requests ({limit.count} per {limit.seconds} s)")


def forgive(redis: Any, name: str, subject: str) -> None:
    """Forget a subject's count (a login that succeeded ends its failures)."""
    redis.delete(_key(name, subject))


# Only a counter that still exists: a DECR of one whose window just ended would make a
# counter at -1 with no expiry, which would live for ever.
_TAKE_ONE_BACK = "if redis.call('exists', KEYS[1]) == 1 then redis.call('decr', KEYS[1]) end"


def forgive_one(redis: Any, name: str, subject: str) -> None:
    """Take one back (a login that succeeded is no failure of its address)."""
    redis.eval(_TAKE_ONE_BACK, 1, _key(name, subject))


def too_many(wait: int, detail: str) -> Problem:
    return Problem(429, "Too Many Requests", f"{detail}; try again in {wait} s",
                   headers={"Retry-After": str(wait)})
