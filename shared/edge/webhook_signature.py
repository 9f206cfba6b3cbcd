"""Is a webhook the payment provider's? Stripe's `Stripe-Signature` scheme, checked here.

The header is `t=<unix time>,v1=<hex>[,v1=<hex>...]`, each `v1` an
HMAC-SHA256 of `"<t>.<raw body>"` under one of the endpoint's secrets (two
during a rotation). A webhook is accepted when any `v1` matches any of our
secrets and `t` is at most `TOLERANCE_SECONDS` from now, in either direction
(a replay of an old one is refused; so is one dated in the future).

Written here rather than taken from the SDK, whose import would weigh on every
cold start of the webhook function for these dozen lines; the unit tests sign
with the SDK's own helper and compare verdicts with the SDK's own check.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

TOLERANCE_SECONDS = 300


def is_signed(payload: bytes, header: str | None, secrets: Sequence[str], now: float,
              tolerance: int = TOLERANCE_SECONDS) -> bool:
    """Whether `header` signs exactly `payload` with one of `secrets`, recently enough."""
    if not header or not secrets:
        return False
    pairs = [part.strip().split("=", 1) for part in header.split(",") if "=" in part]
    stamps = [value for key, value in pairs if key == "t"]
    signatures = [value for key, value in pairs if key == "v1"]
    if len(stamps) != 1 or not signatures:
        return False
    try:
        stamp = int(stamps[0])
    except ValueError:
        return False
    if abs(now - stamp) > tolerance:
        return False
    signed = str(stamp).encode() + b"." + payload
    for secret in secrets:
        expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest().encode()
        if any(hmac.compare_digest(expected, given.encode()) for given in signatures):
            return True
    return False
