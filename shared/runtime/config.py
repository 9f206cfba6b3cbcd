"""Settings read from the environment, once, so every function agrees on them.

The names and defaults are the ones in CONTRACT section 4. A backing service
whose URL is unset is started embedded by `local/`; by the time a function
runs, the URL is always set.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache


def _whole(name: str, raw: str | None, default: int) -> int:
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise RuntimeError(f"{name} must be a whole number, got {raw!r}") from exc


def _switch(name: str, raw: str | None, default: bool) -> bool:
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in {"on", "true", "1", "yes"}:
        return True
    if value in {"off", "false", "0", "no"}:
        return False
    raise RuntimeError(f"{name} must be on or off, got {raw!r}")


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap_servers: str = ""
    database_url: str = ""
    redis_url: str = ""
    elasticsearch_url: str = ""
    # "serverless" for the embedded OpenSearch-compatible server, "stack" for real Elasticsearch.
    elasticsearch_server_mode: str = "stack"
    aws_endpoint_url: str = ""
    aws_region: str = "us-east-1"
    avatar_bucket: str = "marketplace-avatars"
    mail_from: str = "no-reply@marketplace.local"
    jwt_secret: str = field(default="", repr=False)
    admin_email: str = "admin@marketplace.local"
    admin_password: str = field(default="", repr=False)
    hold_ttl_seconds: int = 600
    sweep_interval_seconds: int = 30
    port: int = 8080
    local_mode: bool = False
    access_token_ttl_seconds: int = 900
    refresh_token_ttl_seconds: int = 30 * 24 * 3600
    stripe_api_key: str = field(default="", repr=False)
    # Several during a rotation: a webhook signed with any of them is the provider's.
    stripe_webhook_secrets: tuple[str, ...] = field(default=(), repr=False)
    stripe_api_base: str = ""  # empty: Stripe itself
    payment_reconcile_interval_seconds: int = 60
    payment_reconcile_after_seconds: int = 60
    bookings_per_user_per_course: int = 1
    # The request rate limits (`shared.edge.limits`); the login throttle and the booking
    # cap stay on whatever this says.
    rate_limits: bool = True
    # Peers whose X-Forwarded-For is believed (the Ingress): addresses or CIDR blocks.
    trusted_proxies: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ

        def _int(name: str, default: int) -> int:
            return _whole(name, env.get(name), default)

        local_mode = env.get("MARKETPLACE_LOCAL", "") in {"1", "true", "yes"}
        jwt_secret = env.get("JWT_SECRET", "")
        if not jwt_secret:
            if not local_mode:
                raise RuntimeError("JWT_SECRET is required outside local mode")
            jwt_secret = secrets.token_urlsafe(32)
        return cls(
            kafka_bootstrap_servers=env.get("KAFKA_BOOTSTRAP_SERVERS", ""),
            database_url=env.get("DATABASE_URL", ""),
            redis_url=env.get("REDIS_URL", ""),
            elasticsearch_url=env.get("ELASTICSEARCH_URL", ""),
            elasticsearch_server_mode=env.get("ELASTICSEARCH_SERVER_MODE", "stack"),
            aws_endpoint_url=env.get("AWS_ENDPOINT_URL", ""),
            aws_region=env.get("AWS_REGION", "us-east-1"),
            avatar_bucket=env.get("AVATAR_BUCKET", "marketplace-avatars"),
            mail_from=env.get("MAIL_FROM", "no-reply@marketplace.local"),
            jwt_secret=jwt_secret,
            admin_email=env.get("ADMIN_EMAIL", "admin@marketplace.local"),
            admin_password=env.get("ADMIN_PASSWORD", ""),
            hold_ttl_seconds=_int("HOLD_TTL_SECONDS", 600),
            sweep_interval_seconds=_int("SWEEP_INTERVAL_SECONDS", 30),
            port=_int("PORT", 8080),
            local_mode=local_mode,
            access_token_ttl_seconds=_int("ACCESS_TOKEN_TTL_SECONDS", 900),
            refresh_token_ttl_seconds=_int("REFRESH_TOKEN_TTL_SECONDS", 30 * 24 * 3600),
            stripe_api_key=env.get("STRIPE_API_KEY", ""),
            stripe_webhook_secrets=tuple(
                s.strip() for s in env.get("STRIPE_WEBHOOK_SECRET", "").split(",") if s.strip()),
            stripe_api_base=env.get("STRIPE_API_BASE", ""),
            payment_reconcile_interval_seconds=_int("PAYMENT_RECONCILE_INTERVAL_SECONDS", 60),
            payment_reconcile_after_seconds=_int("PAYMENT_RECONCILE_AFTER_SECONDS", 60),
            bookings_per_user_per_course=_int("BOOKINGS_PER_USER_PER_COURSE", 1),
            rate_limits=_switch("RATE_LIMITS", env.get("RATE_LIMITS"), True),
            trusted_proxies=tuple(
                p.strip() for p in env.get("TRUSTED_PROXIES", "").split(",") if p.strip()),
        )


@lru_cache(maxsize=1)
def settings() -> Settings:
    """The process's settings; tests that change the environment call `settings.cache_clear()`."""
    return Settings.from_env()
