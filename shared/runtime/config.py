"""Settings read from the environment, once, so every function agrees on them.

Every function, a deployment and a local run read the same variables, with the
same defaults (the documentation's configuration page lists them). A backing
service whose URL is unset is started embedded by `local/`; by the time a
function runs, the URL is always set.

Outside local mode a weak setting stops the start with the variable's name
(docs/pages/security/tokens.md): no JWT_PUBLIC_KEYS, a JWT_PRIVATE_KEY that is not
an Ed25519 key, a secret shorter than 32 bytes or one copied from an example.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache

log = logging.getLogger("marketplace.config")


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


# --- access-token keys ----------------------------------------------------------------
# Checked here by their DER shape alone (stdlib): a function's start must not pay for
# loading cryptography; shared.edge.tokens loads the keys on the first token.

_ED25519_PKCS8 = bytes.fromhex("302e020100300506032b657004220420")  # + 32 bytes of key
_ED25519_SPKI = bytes.fromhex("302a300506032b6570032100")  # + 32 bytes of key
KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
PublicKeys = tuple[tuple[str, str], ...]  # (kid, public PEM) pairs, in the order configured


def _pem(name: str, text: str, label: str, prefix: bytes) -> str:
    """One PEM block of an Ed25519 key, rewritten in its canonical form, or refused.

    Line breaks inside are free (a `\\n` escape too), so a key fits one line of an
    env file; what is decoded must be exactly an Ed25519 key of that kind.
    """
    flat = text.replace("\\n", "\n").strip()
    begin, end = f"-----BEGIN {label}-----", f"-----END {label}-----"
    der = b""
    if flat.startswith(begin) and flat.endswith(end):
        try:
            der = base64.b64decode("".join(flat[len(begin):-len(end)].split()), validate=True)
        except binascii.Error:
            der = b""
    if len(der) != len(prefix) + 32 or not der.startswith(prefix):
        raise RuntimeError(f"{name} must be an Ed25519 {label.lower()} in PEM ({begin} ...),"
                           " as `openssl genpkey -algorithm ed25519` makes")
    return f"{begin}\n{base64.b64encode(der).decode()}\n{end}\n"


def _public_keys(text: str) -> PublicKeys:
    """JWT_PUBLIC_KEYS: `kid=PEM` entries separated by `;` (the kid: letters, digits, `._-`)."""
    keys: dict[str, str] = {}
    for entry in filter(str.strip, text.split(";")):
        kid, _, pem = entry.partition("=")
        kid = kid.strip()
        if not KEY_ID.fullmatch(kid) or kid in keys:
            raise RuntimeError(f"JWT_PUBLIC_KEYS: each entry is `kid=PEM` with a distinct kid of"
                               f" letters, digits, `.`, `_` or `-`; got {kid[:64]!r}")
        keys[kid] = _pem("JWT_PUBLIC_KEYS", pem, "PUBLIC KEY", _ED25519_SPKI)
    if not keys:
        raise RuntimeError("JWT_PUBLIC_KEYS names no key")
    return tuple(keys.items())


def _jwt_keys(env: Mapping[str, str], local_mode: bool) -> tuple[str, PublicKeys, str]:
    """The signing key (accounts only), the verifying keys (every function), the signing kid.

    A local process given none makes its own pair, so it runs alone; `local.stack.stack`
    gives every process of a run the same one.
    """
    private = env.get("JWT_PRIVATE_KEY", "").strip()
    public = env.get("JWT_PUBLIC_KEYS", "").strip()
    key_id = env.get("JWT_KEY_ID", "").strip()
    if local_mode and not private and not public:
        from shared.edge.tokens import generate_keys

        made = generate_keys()
        private, public, key_id = (made["JWT_PRIVATE_KEY"], made["JWT_PUBLIC_KEYS"],
                                   made["JWT_KEY_ID"])
    if not public:
        raise RuntimeError("JWT_PUBLIC_KEYS is required outside local mode (and with"
                           " JWT_PRIVATE_KEY): the public keys that verify access tokens")
    keys = _public_keys(public)
    if private:
        private = _pem("JWT_PRIVATE_KEY", private, "PRIVATE KEY", _ED25519_PKCS8)
        if key_id not in dict(keys):
            raise RuntimeError(f"JWT_KEY_ID ({key_id[:64]!r}) must name a key in JWT_PUBLIC_KEYS"
                               " when JWT_PRIVATE_KEY is set: publish its public half first")
    return private, keys, key_id


# --- secrets --------------------------------------------------------------------------

MIN_SECRET_BYTES = 32
# Values from this repository's examples and fakes, and the usual stand-ins.
PLACEHOLDERS = frozenset({
    "changeme", "change-me", "secret", "password", "admin", "admin-password",
    "compose-local-admin", "sk_test_embedded", "sk_test_coldstart", "sk_test_compose_local_only",
    "whsec_compose-local-only-0123456789abcdef",
})
PLACEHOLDER_MARKS = ("changeme", "change-me", "change_me", "replaceme", "replace-me",
                     "replace_me", "placeholder", "local-only", "local_only", "0123456789")


def _refuse_weak(name: str, value: str) -> None:
    """A secret a guess or a copied example would match stops the start (the value unsaid)."""
    if len(value.encode()) < MIN_SECRET_BYTES:
        raise RuntimeError(f"{name} must be at least {MIN_SECRET_BYTES} bytes outside local mode")
    lowered = value.lower()
    if (lowered in PLACEHOLDERS or any(mark in lowered for mark in PLACEHOLDER_MARKS)
            or len(set(value)) < 8):
        raise RuntimeError(f"{name} is a default or placeholder value; set a random one")


def _refuse_weak_secrets(env: Mapping[str, str]) -> None:
    """The secrets this service checks or proves itself with; each is checked only when set.

    The Stripe API key is checked only towards Stripe itself (no STRIPE_API_BASE):
    a provider's fake takes any key. URLs (DATABASE_URL, ...) are addresses, not secrets
    to measure; the JWT keys are checked by their shape.
    """
    for secret in env.get("STRIPE_WEBHOOK_SECRET", "").split(","):
        if secret.strip():
            _refuse_weak("STRIPE_WEBHOOK_SECRET", secret.strip())
    if env.get("ADMIN_PASSWORD", ""):
        _refuse_weak("ADMIN_PASSWORD", env.get("ADMIN_PASSWORD", ""))
    if env.get("STRIPE_API_KEY", "") and not env.get("STRIPE_API_BASE", ""):
        _refuse_weak("STRIPE_API_KEY", env.get("STRIPE_API_KEY", ""))


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
    # PEM; set for the accounts function only (it issues the tokens), empty elsewhere.
    jwt_private_key: str = field(default="", repr=False)
    jwt_public_keys: PublicKeys = ()
    jwt_key_id: str = ""  # the kid of the key that signs (with jwt_private_key)
    admin_email: str = "admin@marketplace.local"
    admin_password: str = field(default="", repr=False)
    hold_ttl_seconds: int = 600
    sweep_interval_seconds: int = 30
    # How often the analytics indexer reads the topics on one machine (the local ping); a
    # cluster's PingSource runs it once a minute.
    index_interval_seconds: int = 2
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
        jwt_private_key, jwt_public_keys, jwt_key_id = _jwt_keys(env, local_mode)
        if not local_mode:
            _refuse_weak_secrets(env)
            if "JWT_SECRET" in env:  # said, not refused: a leftover must not stop a rollout
                log.warning("JWT_SECRET is set but no longer read: access tokens are signed"
                            " with JWT_PRIVATE_KEY and checked with JWT_PUBLIC_KEYS")
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
            jwt_private_key=jwt_private_key,
            jwt_public_keys=jwt_public_keys,
            jwt_key_id=jwt_key_id,
            admin_email=env.get("ADMIN_EMAIL", "admin@marketplace.local"),
            admin_password=env.get("ADMIN_PASSWORD", ""),
            hold_ttl_seconds=_int("HOLD_TTL_SECONDS", 600),
            sweep_interval_seconds=_int("SWEEP_INTERVAL_SECONDS", 30),
            index_interval_seconds=_int("INDEX_INTERVAL_SECONDS", 2),
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
