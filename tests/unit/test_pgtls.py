"""DATABASE_URL's sslmode, as libpq reads it; no TLS (and no CA bundle) over a unix socket."""

from __future__ import annotations

import ssl

import pytest

from shared.runtime.db import connect_kwargs


def test_a_unix_socket_never_negotiates_tls() -> None:
    kwargs = connect_kwargs("postgresql://postgres@localhost:5432/db?host=/tmp/pg")
    assert kwargs["unix_sock"] == "/tmp/pg/.s.PGSQL.5432" and kwargs["ssl_context"] is False


def test_tcp_follows_sslmode() -> None:
    assert "ssl_context" not in connect_kwargs("postgresql://u@db:5432/m")  # prefer: pg8000's
    assert connect_kwargs("postgresql://u@db/m?sslmode=disable")["ssl_context"] is False
    required = connect_kwargs("postgresql://u@db/m?sslmode=require")["ssl_context"]
    assert isinstance(required, ssl.SSLContext) and required.verify_mode == ssl.CERT_NONE
    full = connect_kwargs("postgresql://u@db/m?sslmode=verify-full")["ssl_context"]
    assert full.verify_mode == ssl.CERT_REQUIRED and full.check_hostname


def test_an_unknown_sslmode_is_refused() -> None:
    with pytest.raises(RuntimeError, match="sslmode"):
        connect_kwargs("postgresql://u@db/m?sslmode=maybe")
