"""Access tokens (signed JWTs) and refresh tokens (opaque, stored hashed).

An access token is short-lived and checked without a database call; a
refresh token is a random string whose SHA-256 is kept, so a stolen table
does not yield usable tokens.

PyJWT is imported on the first token signed or checked (it loads a crypto
backend), not when a function that merely declares authenticated routes loads.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.runtime.config import settings

ALGORITHM = "HS256"
ISSUER = "marketplace"


def issue_access(user_id: uuid.UUID, role: str, session_id: uuid.UUID,
                 now: datetime | None = None) -> str:
    """A signed access token; `sid` names the login, so logout can end exactly that one."""
    now = now or datetime.now(UTC)
    claims = {
        "iss": ISSUER,
        "sub": str(user_id),
        "role": role,
        "sid": str(session_id),
        "typ": "access",
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(seconds=settings().access_token_ttl_seconds)).timestamp()),
        "jti": uuid.uuid4().hex,
    }
    import jwt

    return jwt.encode(claims, settings().jwt_secret, algorithm=ALGORITHM)


def verify_access(token: str) -> dict[str, Any] | None:
    import jwt

    try:
        claims: dict[str, Any] = jwt.decode(
            token, settings().jwt_secret, algorithms=[ALGORITHM], issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "jti", "sid"]},
        )
    except jwt.PyJWTError:
        return None
    if claims.get("typ") != "access" or claims.get("role") not in {"user", "author", "admin"}:
        return None
    return claims


def new_refresh_token() -> str:
    return secrets.token_urlsafe(32)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
