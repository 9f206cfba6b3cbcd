"""The webhook's signature check, against signatures made by the Stripe SDK's own helper.

Every case is also put to the SDK's own check, and both must agree (but for
a future timestamp, which the SDK accepts and we refuse).
"""

from __future__ import annotations

import time

import pytest
import stripe

from shared.edge.webhook_signature import TOLERANCE_SECONDS, is_signed

SECRET = "whsec_current_" + "c" * 24
OLD = "whsec_previous_" + "p" * 24
BODY = b'{"id": "evt_1", "type": "payment_intent.succeeded", "data": {"object": {}}}'


def header(body: bytes = BODY, secret: str = SECRET, at: float | None = None) -> str:
    stamp = int(time.time() if at is None else at)
    return str(stripe.WebhookSignature.generate_signature_header(body.decode(), secret, stamp))


def sdk_accepts(body: bytes, signature: str | None, secret: str) -> bool:
    try:
        stripe.WebhookSignature.verify_header(body.decode(), signature, secret,
                                              tolerance=TOLERANCE_SECONDS)
    except stripe.SignatureVerificationError:
        return False
    return True


def verdicts(body: bytes, signature: str | None, secrets: list[str]) -> tuple[bool, bool]:
    ours = is_signed(body, signature, secrets, time.time())
    sdk = any(sdk_accepts(body, signature, s) for s in secrets)
    return ours, sdk


def test_a_signed_body_is_accepted() -> None:
    assert verdicts(BODY, header(), [SECRET]) == (True, True)


def test_a_tampered_body_is_refused() -> None:
    assert verdicts(BODY.replace(b"evt_1", b"evt_2"), header(), [SECRET]) == (False, False)


def test_a_reserialised_body_is_refused() -> None:
    assert verdicts(BODY.replace(b": ", b":"), header(), [SECRET]) == (False, False)


def test_the_wrong_secret_is_refused() -> None:
    assert verdicts(BODY, header(secret="whsec_someone_else"), [SECRET]) == (False, False)


def test_during_a_rotation_either_configured_secret_is_accepted() -> None:
    assert verdicts(BODY, header(secret=OLD), [SECRET, OLD]) == (True, True)
    assert verdicts(BODY, header(secret=SECRET), [SECRET, OLD]) == (True, True)


def test_a_retired_secret_is_refused() -> None:
    assert verdicts(BODY, header(secret=OLD), [SECRET]) == (False, False)


def test_a_stale_signature_is_refused() -> None:
    stale = header(at=time.time() - TOLERANCE_SECONDS - 5)
    assert verdicts(BODY, stale, [SECRET]) == (False, False)
    recent = header(at=time.time() - TOLERANCE_SECONDS + 30)
    assert verdicts(BODY, recent, [SECRET]) == (True, True)


def test_a_signature_from_the_future_is_refused_by_us() -> None:
    future = header(at=time.time() + TOLERANCE_SECONDS + 60)
    assert verdicts(BODY, future, [SECRET]) == (False, True)


def test_two_v1_values_are_accepted_when_one_matches() -> None:
    good = header()
    stamp, signature = good.split(",")
    both = f"{stamp},v1={'0' * 64},{signature}"
    assert verdicts(BODY, both, [SECRET]) == (True, True)
    neither = f"{stamp},v1={'0' * 64},v1={'f' * 64}"
    assert verdicts(BODY, neither, [SECRET]) == (False, False)


@pytest.mark.parametrize("signature", [None, "", "garbage", "t=,v1=", "v1=abc",
                                       "t=notanumber,v1=abc", "t=1,t=2,v1=abc",
                                       "t=1700000000,v0=abc"])
def test_a_missing_or_malformed_header_is_refused(signature: str | None) -> None:
    assert is_signed(BODY, signature, [SECRET], time.time()) is False
    assert sdk_accepts(BODY, signature, SECRET) is False


def test_a_non_ascii_signature_is_refused_where_the_sdk_raises() -> None:
    stamp = header().split(",")[0]
    signature = f"{stamp},v1=\u00e9\u00e9"
    assert is_signed(BODY, signature, [SECRET], time.time()) is False
    with pytest.raises(TypeError):  # the SDK's compare_digest on a non-ASCII str
        sdk_accepts(BODY, signature, SECRET)


def test_no_configured_secret_accepts_nothing() -> None:
    assert is_signed(BODY, header(), [], time.time()) is False
