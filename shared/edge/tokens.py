"""Access tokens (signed JWTs) and refresh tokens (opaque, stored hashed).

An access token is short-lived and checked without a database call. It is
signed with Ed25519 (EdDSA) by the one function that issues tokens (accounts,
the only holder of JWT_PRIVATE_KEY); every other function verifies with the
public keys in JWT_PUBLIC_KEYS, so a function that can check a token cannot
mint one. The token's `kid` header picks the public key, which is what lets a
new key be published before it signs anything (docs/pages/security/tokens.md).

A refresh token is a random string whose SHA-256 is kept, so a stolen table
does not yield usable tokens.

PyJWT and cryptography are imported on the first token signed or checked (they
load a crypto backend), not when a function that merely declares authenticated
routes loads; parsed keys are kept per process, keyed by their PEM.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from shared.edge.roles import SIGNED_IN, Role
from shared.runtime.config import settings

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

ALGORITHM = "EdDSA"
ISSUER = "marketplace"


def issue_access(user_id: uuid.UUID, role: str, session_id: uuid.UUID,
                 now: datetime | None = None) -> str:
    """A signed access token; `sid` names the login, so logout can end exactly that one."""
    cfg = settings()
    if not cfg.jwt_private_key:
        raise RuntimeError("JWT_PRIVATE_KEY is not set: only the accounts function issues"
                           " access tokens, and it needs the signing key")
    now = now or datetime.now(UTC)
    claims = {
        "iss": ISSUER,
        "sub": str(user_id),
        "role": Role(role).value,  # never a role no route knows
        "sid": str(session_id),
        "typ": "access",
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(seconds=cfg.access_token_ttl_seconds)).timestamp()),
        "jti": uuid.uuid4().hex,
    }
    import jwt

    key = _signing_key(cfg.jwt_private_key, dict(cfg.jwt_public_keys)[cfg.jwt_key_id])
    return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": cfg.jwt_key_id})


def verify_access(token: str) -> dict[str, Any] | None:
    """The claims of a valid access token; None for anything else, unknown `kid` included.

    Only EdDSA is accepted, whatever the header says, so neither `alg: none`
    nor an HMAC keyed with a public key (alg confusion) gets through.
    """
    import jwt

    try:
        header = jwt.get_unverified_header(token)
        kid = header.get("kid")
        pem = dict(settings().jwt_public_keys).get(kid) if isinstance(kid, str) else None
        if pem is None or header.get("alg") != ALGORITHM:
            return None
        claims: dict[str, Any] = jwt.decode(
            token, _verifying_key(pem), algorithms=[ALGORITHM], issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "jti", "sid"]},
        )
    except jwt.PyJWTError:
        return None
    if claims.get("typ") != "access" or claims.get("role") not in SIGNED_IN:
        return None
    return claims


def new_refresh_token() -> str:
    return secrets.token_urlsafe(32)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# --- keys ---------------------------------------------------------------------------

def generate_keys(key_id: str = "") -> dict[str, str]:
    """A fresh Ed25519 pair as JWT_PRIVATE_KEY, JWT_PUBLIC_KEYS and JWT_KEY_ID.

    For a local run or a test: nothing to configure, and nothing that outlives
    the run (its tokens mean nothing to the next one).
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    kid = key_id or f"local-{secrets.token_hex(4)}"
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return {"JWT_PRIVATE_KEY": private, "JWT_PUBLIC_KEYS": public_keys_setting({
        kid: public.decode()}), "JWT_KEY_ID": kid}


def public_keys_setting(keys: Mapping[str, str]) -> str:
    """JWT_PUBLIC_KEYS for these `kid: public PEM` pairs: `kid=PEM` entries joined by `;`."""
    return ";\n".join(f"{kid}={pem.strip()}" for kid, pem in keys.items())


@lru_cache(maxsize=4)
def _signing_key(private_pem: str, public_pem: str) -> Ed25519PrivateKey:
    """The private key, once it is known to be the half of the public key its `kid` names.

    Tokens signed with any other key would be refused by every verifier, so a
    mismatched JWT_KEY_ID stops the first login rather than every request after it.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise RuntimeError("JWT_PRIVATE_KEY is not an Ed25519 private key")
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    if key.public_key().public_bytes(*raw) != _verifying_key(public_pem).public_bytes(*raw):
        raise RuntimeError("JWT_PRIVATE_KEY is not the private half of the key JWT_KEY_ID"
                           " names in JWT_PUBLIC_KEYS")
    return key


@lru_cache(maxsize=16)
def _verifying_key(public_pem: str) -> Ed25519PublicKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(public_pem.encode())
    except ValueError as exc:
        raise RuntimeError("a key in JWT_PUBLIC_KEYS is not an Ed25519 public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise RuntimeError("a key in JWT_PUBLIC_KEYS is not an Ed25519 public key")
    return key
