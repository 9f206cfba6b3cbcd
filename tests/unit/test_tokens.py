"""Access tokens are Ed25519-signed with a `kid`; only the key holder can mint one.

Also the start-up refusals of weak settings outside local mode, since a token
is only as strong as the keys and secrets the process was started with.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from shared.edge import tokens
from shared.edge.tokens import generate_keys, public_keys_setting
from shared.runtime.config import Settings, settings

ROOT = Path(__file__).resolve().parents[2]
JWT_VARIABLES = ("JWT_PRIVATE_KEY", "JWT_PUBLIC_KEYS", "JWT_KEY_ID")
USER, SESSION = uuid.uuid4(), uuid.uuid4()


@pytest.fixture(autouse=True)
def fresh_settings() -> Iterator[None]:
    settings.cache_clear()
    yield
    settings.cache_clear()


def use(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    """This process's JWT settings become exactly `env`."""
    for name in JWT_VARIABLES:
        if name in env:
            monkeypatch.setenv(name, env[name])
        else:
            monkeypatch.delenv(name, raising=False)
    settings.cache_clear()


def public_pem(keys: dict[str, str]) -> str:
    return keys["JWT_PUBLIC_KEYS"].partition("=")[2]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict[str, Any], claims: dict[str, Any], sign: bytes = b"") -> str:
    """A token built by hand, as an attacker would (PyJWT refuses to build these)."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = hmac.new(sign, signing_input.encode(), hashlib.sha256).digest() if sign else b""
    return f"{signing_input}.{b64(signature)}"


# --- signing and verifying -------------------------------------------------------------

def test_a_token_is_signed_with_eddsa_under_its_kid_and_verified(
        monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, **generate_keys("k1"))
    token = tokens.issue_access(USER, "author", SESSION)
    assert jwt.get_unverified_header(token) == {"alg": "EdDSA", "kid": "k1", "typ": "JWT"}
    claims = tokens.verify_access(token)
    assert claims is not None
    assert (claims["sub"], claims["role"], claims["sid"]) == (str(USER), "author", str(SESSION))


def test_a_token_signed_by_another_key_or_under_an_unknown_kid_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    keys = generate_keys("k1")
    use(monkeypatch, **keys)
    claims = jwt.decode(tokens.issue_access(USER, "user", SESSION),
                        options={"verify_signature": False})
    stranger = generate_keys("k1")["JWT_PRIVATE_KEY"]
    assert tokens.verify_access(jwt.encode(claims, stranger, "EdDSA", {"kid": "k1"})) is None
    ours = keys["JWT_PRIVATE_KEY"]
    assert tokens.verify_access(jwt.encode(claims, ours, "EdDSA", {"kid": "k2"})) is None
    assert tokens.verify_access(jwt.encode(claims, ours, "EdDSA")) is None  # no kid at all
    assert tokens.verify_access(forged({"alg": "EdDSA", "kid": ["k1"]}, claims)) is None
    assert tokens.verify_access(jwt.encode(claims, ours, "EdDSA", {"kid": "k1"})) is not None


def test_an_hmac_keyed_with_the_public_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The classic alg confusion: the public key is public, so it must never be an HMAC key."""
    keys = generate_keys("k1")
    use(monkeypatch, **keys)
    claims = jwt.decode(tokens.issue_access(USER, "user", SESSION),
                        options={"verify_signature": False})
    admin = {**claims, "role": "admin"}
    for secret in (public_pem(keys), settings().jwt_public_keys[0][1]):
        for alg in ("HS256", "hs256"):
            token = forged({"alg": alg, "typ": "JWT", "kid": "k1"}, admin, secret.encode())
            assert tokens.verify_access(token) is None


def test_an_unsigned_token_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, **generate_keys("k1"))
    claims = jwt.decode(tokens.issue_access(USER, "user", SESSION),
                        options={"verify_signature": False})
    for alg in ("none", "None", "NONE"):
        assert tokens.verify_access(forged({"alg": alg, "kid": "k1"}, claims)) is None


def test_rotation_publish_switch_then_drop(monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = generate_keys("2025-01"), generate_keys("2025-07")
    both = public_keys_setting({"2025-07": public_pem(new), "2025-01": public_pem(old)})
    use(monkeypatch, **old)
    signed_old = tokens.issue_access(USER, "user", SESSION)
    use(monkeypatch, **{**old, "JWT_PUBLIC_KEYS": both})  # 1. publish the new public key
    assert tokens.verify_access(signed_old) is not None
    use(monkeypatch, **{**new, "JWT_PUBLIC_KEYS": both})  # 2. switch the signing key
    signed_new = tokens.issue_access(USER, "user", SESSION)
    assert jwt.get_unverified_header(signed_new)["kid"] == "2025-07"
    assert tokens.verify_access(signed_old) is not None
    assert tokens.verify_access(signed_new) is not None
    use(monkeypatch, **new)  # 3. drop the old public key once its tokens have expired
    assert tokens.verify_access(signed_old) is None
    assert tokens.verify_access(signed_new) is not None


VERIFIER = """
import json, sys
from shared.edge import tokens
claims = tokens.verify_access(sys.argv[1])
try:
    tokens.issue_access(__import__("uuid").uuid4(), "admin", __import__("uuid").uuid4())
    issued = "issued"
except RuntimeError as exc:
    issued = str(exc)
print(json.dumps({"sub": claims and claims["sub"], "issue": issued}))
"""


def test_a_verifier_without_the_private_key_verifies_and_cannot_issue(
        monkeypatch: pytest.MonkeyPatch) -> None:
    keys = generate_keys("k1")
    use(monkeypatch, **keys)
    token = tokens.issue_access(USER, "user", SESSION)
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT),  # not local mode
           "JWT_PUBLIC_KEYS": keys["JWT_PUBLIC_KEYS"], "JWT_KEY_ID": "k1"}
    done = subprocess.run([sys.executable, "-c", VERIFIER, token], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["sub"] == str(USER)
    assert "JWT_PRIVATE_KEY is not set" in answer["issue"]


def test_issuing_without_a_private_key_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = generate_keys("k1")
    use(monkeypatch, JWT_PUBLIC_KEYS=keys["JWT_PUBLIC_KEYS"], JWT_KEY_ID="k1")
    with pytest.raises(RuntimeError, match="JWT_PRIVATE_KEY is not set"):
        tokens.issue_access(USER, "user", SESSION)


def test_a_private_key_that_is_not_its_kids_public_half_cannot_issue(
        monkeypatch: pytest.MonkeyPatch) -> None:
    keys, other = generate_keys("k1"), generate_keys("k1")
    use(monkeypatch, **{**keys, "JWT_PRIVATE_KEY": other["JWT_PRIVATE_KEY"]})
    with pytest.raises(RuntimeError, match="not the private half"):
        tokens.issue_access(USER, "user", SESSION)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl here")
def test_keys_made_by_openssl_as_the_docs_say_work(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    private, public = tmp_path / "k.pem", tmp_path / "k.pub.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(private)],
                   check=True)
    subprocess.run(["openssl", "pkey", "-in", str(private), "-pubout", "-out", str(public)],
                   check=True)
    one_line = private.read_text().strip().replace("\n", "\\n")  # as in a one-line .env
    use(monkeypatch, JWT_PRIVATE_KEY=one_line, JWT_KEY_ID="ops-1",
        JWT_PUBLIC_KEYS=f"ops-1={public.read_text()}")
    assert tokens.verify_access(tokens.issue_access(USER, "user", SESSION)) is not None


# --- start-up refusals outside local mode ------------------------------------------------

def ec_private_pem() -> str:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()


def test_outside_local_mode_jwt_public_keys_are_required() -> None:
    with pytest.raises(RuntimeError, match="JWT_PUBLIC_KEYS is required"):
        Settings.from_env({})
    with pytest.raises(RuntimeError, match="JWT_PUBLIC_KEYS is required"):
        Settings.from_env({"JWT_PRIVATE_KEY": generate_keys()["JWT_PRIVATE_KEY"]})
    verifier = Settings.from_env({"JWT_PUBLIC_KEYS": generate_keys()["JWT_PUBLIC_KEYS"]})
    assert verifier.jwt_private_key == "" and len(verifier.jwt_public_keys) == 1


@pytest.mark.parametrize("private", [
    "a-long-shared-secret-of-the-old-kind-0f3a9c", "", "-----BEGIN PRIVATE KEY-----\n"
    "bm90IGEga2V5\n-----END PRIVATE KEY-----", "ec"])
def test_a_private_key_that_is_not_an_ed25519_pem_is_refused(private: str) -> None:
    keys = generate_keys("k1")
    private = {"ec": ec_private_pem(), "": public_pem(keys)}.get(private, private)
    with pytest.raises(RuntimeError, match="JWT_PRIVATE_KEY must be an Ed25519 private key"):
        Settings.from_env({**keys, "JWT_PRIVATE_KEY": private})


@pytest.mark.parametrize("public", [
    "k1", "=PEM", "k 1=PEM", "k1=-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
    ";", "ec"])
def test_malformed_public_keys_are_refused(public: str) -> None:
    if public == "ec":
        key = ec.generate_private_key(ec.SECP256R1()).public_key()
        public = "k1=" + key.public_bytes(serialization.Encoding.PEM,
                                          serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    with pytest.raises(RuntimeError, match="JWT_PUBLIC_KEYS"):
        Settings.from_env({"JWT_PUBLIC_KEYS": public})


def test_public_keys_are_kid_pem_entries_separated_by_semicolons() -> None:
    a, b = generate_keys("a"), generate_keys("b")
    text = f"a={public_pem(a)} ;\n b={public_pem(b)}"
    assert [kid for kid, _ in Settings.from_env({"JWT_PUBLIC_KEYS": text}).jwt_public_keys] == [
        "a", "b"]
    with pytest.raises(RuntimeError, match="distinct kid"):
        Settings.from_env({"JWT_PUBLIC_KEYS": f"a={public_pem(a)};a={public_pem(b)}"})


def test_the_signing_kid_must_be_published() -> None:
    keys = generate_keys("k1")
    for key_id in ("k2", ""):
        with pytest.raises(RuntimeError, match="JWT_KEY_ID"):
            Settings.from_env({**keys, "JWT_KEY_ID": key_id})


@pytest.mark.parametrize(("name", "value"), [
    ("STRIPE_WEBHOOK_SECRET", "whsec_short"),
    ("STRIPE_WEBHOOK_SECRET", "whsec_compose-local-only-0123456789abcdef"),
    ("STRIPE_WEBHOOK_SECRET", "whsec_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7" + ",whsec_old"),
    ("ADMIN_PASSWORD", "compose-local-admin"),
    ("ADMIN_PASSWORD", "changeme-changeme-changeme-changeme"),
    ("ADMIN_PASSWORD", "x" * 40),
    ("STRIPE_API_KEY", "sk_test_compose_local_only"),
])
def test_weak_secrets_are_refused_outside_local_mode_without_saying_them(
        name: str, value: str) -> None:
    env = {**generate_keys(), name: value}
    with pytest.raises(RuntimeError, match=name) as refused:
        Settings.from_env(env)
    assert all(part not in str(refused.value) for part in value.split(","))
    Settings.from_env({**env, "MARKETPLACE_LOCAL": "1"})  # a laptop may use anything


def test_strong_secrets_pass_and_a_fakes_api_key_is_not_measured() -> None:
    strong = base64.b64encode(os.urandom(32)).decode()
    cfg = Settings.from_env({
        **generate_keys(), "STRIPE_WEBHOOK_SECRET": f"whsec_{strong},whsec_{strong[::-1]}",
        "ADMIN_PASSWORD": strong, "STRIPE_API_KEY": "sk_test_x",
        "STRIPE_API_BASE": "http://fake-stripe:8420"})
    assert cfg.admin_password == strong and len(cfg.stripe_webhook_secrets) == 2


def test_jwt_secret_is_no_longer_read_and_is_warned_about(
        caplog: pytest.LogCaptureFixture) -> None:
    keys = generate_keys("k1")
    with caplog.at_level(logging.WARNING, logger="marketplace.config"):
        cfg = Settings.from_env({**keys, "JWT_SECRET": "s" * 40})
    assert "JWT_SECRET is set but no longer read" in caplog.text
    assert "s" * 40 not in repr(cfg) and not hasattr(cfg, "jwt_secret")
    assert repr(cfg).count("PRIVATE KEY") == 0  # the private key stays out of reprs
