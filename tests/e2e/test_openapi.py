"""The OpenAPI document: served, committed, complete, and the API does what it says.

The last test runs Schemathesis from outside, as anyone could, with every check
it has (stateful links included) against the whole stack, signed in as a user
and as an admin: it must find nothing. This module is also its hooks module
(`SCHEMATHESIS_HOOKS=test_openapi`): what a generator cannot know, it is told
there, and nothing else (see `install_hooks`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import struct
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import strategies as st

from local.stack import seed
from tests.helpers.client import Client
from tests.helpers.marketplace import Marketplace

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "functions" / "openapi.json"
FUZZ_EXAMPLES = 25  # per operation and phase: about a minute for both runs
FUZZ_SEED = 20261202  # a fixed seed: a finding reproduces; change it to look elsewhere
HOOKS_MODULE = "test_openapi"
WEBHOOK_SECRET_VARIABLE = "FUZZ_STRIPE_WEBHOOK_SECRET"
COURSE_VARIABLE = "FUZZ_COURSE_ID"

# Every route of the HTTP API, as the API reference lists them.
ROUTES = {
    ("post", "/auth/register"), ("post", "/auth/login"), ("post", "/auth/refresh"),
    ("post", "/auth/logout"), ("post", "/auth/password"), ("get", "/users/me"),
    ("patch", "/users/me"), ("put", "/users/me/avatar"), ("get", "/users"),
    ("post", "/courses"), ("get", "/courses"), ("get", "/courses/{course_id}"),
    ("patch", "/courses/{course_id}"), ("post", "/courses/{course_id}/deactivate"),
    ("post", "/bookings"), ("get", "/bookings/{booking_id}"), ("get", "/bookings"),
    ("post", "/bookings/{booking_id}/payment"), ("post", "/bookings/{booking_id}/cancel"),
    ("get", "/healthz"), ("get", "/analytics/summary"),
}


def test_served_document_is_the_committed_one(marketplace: Marketplace) -> None:
    served = Client(marketplace.url).call("GET", "/openapi.json")
    assert served.status == 200
    assert served.body == json.loads(COMMITTED.read_text())


def test_every_route_is_documented() -> None:
    document = json.loads(COMMITTED.read_text())
    assert document["openapi"].startswith("3.1")
    documented = {(method, path) for path, ops in document["paths"].items() for method in ops}
    assert ROUTES - documented == set()


# --- what the generator is told: only what JSON Schema cannot say -----------------------

_DATE = re.compile(r"(\d{4})-(\d\d)-(\d\d)([Tt]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d))")
_SIGNATURE = re.compile(r"t=[0-9]{1,12}(,v1=[0-9a-f]{64})+")


def _png(width: int, height: int, rest: bytes) -> bytes:
    return (b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + struct.pack(">II", width, height)
            + b"\x08\x02\x00\x00\x00" + b"\x00\x00\x00\x00" + rest)


def _ahead(text: str) -> str:
    """The same date-time in one of the next five years: a course starts in the future."""
    found = _DATE.fullmatch(text)
    if found is None:
        return text
    year = datetime.now(UTC).year + 1 + int(found[1]) % 5
    day = "28" if (found[2], found[3]) == ("02", "29") else found[3]
    return f"{year:04d}-{found[2]}-{day}{found[4]}"


def _sign(case: Any) -> None:
    """Sign a webhook as the payment provider would: one it could send (a schema-valid one),
    with a header of the documented shape. Anything else goes unsigned and must be refused."""
    secret = os.environ.get(WEBHOOK_SECRET_VARIABLE)
    headers = case.headers or {}
    negative = case.meta is not None and case.meta.generation.mode.is_negative
    if not secret or negative or not _SIGNATURE.fullmatch(
            str(headers.get("Stripe-Signature", ""))):
        return
    try:
        payload = json.dumps(case.body, allow_nan=False).encode()  # what requests sends
    except (TypeError, ValueError):  # no body at all
        return
    stamp = str(int(time.time()))
    digest = hmac.new(secret.encode(), stamp.encode() + b"." + payload, hashlib.sha256)
    case.headers = {**headers, "Stripe-Signature": f"t={stamp},v1={digest.hexdigest()}"}


def _existing(course_id: object) -> object:
    """A course that exists in place of a well-formed id (one that does not is a 422)."""
    try:
        uuid.UUID(str(course_id))
    except ValueError:
        return course_id  # malformed on purpose: left to be refused
    return os.environ.get(COURSE_VARIABLE, course_id)


def install_hooks() -> None:
    """Four facts no schema states: what a PNG or JPEG is, that a course starts in the
    future (JSON Schema has no "now"), which courses exist (a booking names one), and the
    webhook's HMAC (only its shape is public)."""
    pngs = st.builds(_png, st.integers(1, 4096), st.integers(1, 4096), st.binary(max_size=64))
    jpegs = st.binary(max_size=64).map(lambda middle: b"\xff\xd8\xff\xe0" + middle + b"\xff\xd9")
    schemathesis.openapi.media_type("image/png", pngs)
    schemathesis.openapi.media_type("image/jpeg", jpegs)

    @schemathesis.hook
    def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
        operation = (case.operation.method.upper(), case.operation.path)
        if operation in {("POST", "/courses"), ("PATCH", "/courses/{course_id}")} \
                and isinstance(case.body, dict) and isinstance(case.body.get("starts_at"), str):
            case.body = {**case.body, "starts_at": _ahead(case.body["starts_at"])}
        if operation == ("POST", "/bookings") and isinstance(case.body, dict) \
                and "course_id" in case.body:
            case.body = {**case.body, "course_id": _existing(case.body["course_id"])}
        if operation == ("POST", "/webhooks/stripe"):
            _sign(case)


if os.environ.get("SCHEMATHESIS_HOOKS") == HOOKS_MODULE:  # loaded by the CLI run below
    install_hooks()


def fuzz(marketplace: Marketplace, token: str, course_id: str,
         workdir: Path) -> subprocess.CompletedProcess[str]:
    """`st run` on the served document with every check and phase, as the bearer of `token`.

    It runs in `workdir`, where Schemathesis and Hypothesis keep what they keep.
    """
    here = Path(__file__).resolve().parent
    env = {**os.environ, "SCHEMATHESIS_HOOKS": HOOKS_MODULE,
           WEBHOOK_SECRET_VARIABLE: marketplace.stack.env["STRIPE_WEBHOOK_SECRET"].split(",")[0],
           COURSE_VARIABLE: course_id,
           "PYTHONPATH": os.pathsep.join([str(here), str(ROOT)])}
    return subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", f"{marketplace.url}/openapi.json",
         "--checks", "all", "--max-examples", str(FUZZ_EXAMPLES), "--seed", str(FUZZ_SEED),
         # One worker: CPython 3.11.7's `ast.parse` is not safe across threads, and Hypothesis
         # parses lambdas' sources while it builds strategies.
         "--header", f"Authorization: Bearer {token}", "--workers", "1", "--no-color",
         "--generation-database", "none", "--request-timeout", "40",
         "--report", "junit", "--report-junit-path", str(workdir / "junit.xml")],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=600, check=False)


def test_schemathesis_finds_nothing_as_a_user_or_as_an_admin(
        marketplace: Marketplace, tmp_path: Path) -> None:
    """Every check, every phase: an undocumented status, a valid request refused, an invalid
    one accepted, a body unlike its schema, a non-problem error... each is a failure.

    The admin's run may change any user's role and any course: its own admin account does
    it, and the session's admin is an admin again afterwards.
    """
    rt = marketplace.stack.runtime
    assert rt is not None
    email = f"fuzz-admin-{uuid.uuid4().hex[:8]}@example.com"
    seed.seed_admin(rt, email, "fuzz admin password")
    login = marketplace.login(email, "fuzz admin password")
    assert login.status == 200, login.body
    runs = {"user": marketplace.register().token, "admin": login.body["access_token"]}
    course_id = marketplace.publish(capacity=10_000)["course_id"]
    session_admin = marketplace.admin.ok("GET", "/users/me")["user_id"]
    found = {}
    try:
        for who, token in runs.items():
            (tmp_path / who).mkdir()
            done = fuzz(marketplace, token, course_id, tmp_path / who)
            if done.returncode != 0:
                found[who] = done.stdout[-12_000:] + done.stderr[-2_000:]
    finally:
        seed.seed_admin(rt, "admin@marketplace.local", None)  # its account, then its profile
        marketplace.admin.call("PUT", f"/users/{session_admin}/role", {"role": "admin"})
    assert found == {}, "\n\n".join(f"=== as the {who}\n{out}" for who, out in found.items())
