"""TLS for the PostgreSQL connections, as libpq's `sslmode` says, without wasted work.

Left to itself, pg8000 "prefers" TLS on every connection, unix sockets
included: it builds `ssl.create_default_context()`, which loads the system's
CA bundle (a large share of a simple reaction's first event after its
imports), then turns verification off and asks the server, which
over a unix socket never offers TLS. libpq never tries TLS over a unix
socket, and neither do we; `sslmode` in DATABASE_URL picks the rest:

- `disable`: no TLS;
- `require`: TLS, unverified (what pg8000's default does when the server
  offers TLS), with a context that loads no CA bundle;
- `verify-ca`, `verify-full`: TLS verified against the system's CAs (and, for
  `verify-full`, the host name);
- `prefer` (libpq's default, and ours), `allow`: pg8000's own behaviour.
"""

from __future__ import annotations

import ssl
from typing import Literal

MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def context(sslmode: str, unix_socket: bool) -> ssl.SSLContext | Literal[False] | None:
    """pg8000's `ssl_context` argument: False (no TLS), a context, or None (its default)."""
    if sslmode not in MODES:
        raise RuntimeError(f"DATABASE_URL: sslmode must be one of {', '.join(MODES)}, "
                           f"got {sslmode!r}")
    if unix_socket or sslmode == "disable":
        return False
    if sslmode == "require":
        unverified = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        unverified.check_hostname = False
        unverified.verify_mode = ssl.CERT_NONE
        return unverified
    if sslmode in ("verify-ca", "verify-full"):
        verified = ssl.create_default_context()
        verified.check_hostname = sslmode == "verify-full"
        return verified
    return None
