"""`python -m local.deploy.compose_env` (make compose-env): docker-compose's secrets, in `.env`.

docker-compose.yml commits no secret: each is a required `${NAME:?run make
compose-env}`, which `docker compose` fills from the `.env` file beside it.
That file is made here, random and for this machine only, and is never
committed (.gitignore) nor sent to an image build (.dockerignore). A name
already in it keeps its value, so running this again changes nothing (the
stack's PostgreSQL keeps the password it was first started with); to start
over, `docker compose down` and delete `.env`.

The fakes' credentials have names of their own (MOTO_..., FAKE_STRIPE_...):
a variable set in the shell wins over `.env`, and a developer's real
AWS_SECRET_ACCESS_KEY or STRIPE_API_KEY must never reach the local stack.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path

from shared.edge import tokens

ROOT = Path(__file__).resolve().parents[2]
ENV_FILE = ROOT / ".env"
HEADER = ("# docker-compose's secrets for this machine, made by `make compose-env`."
          " Never commit this file.\n")


def _fresh() -> dict[str, str]:
    """A new value for every name docker-compose.yml reads."""
    jwt = tokens.generate_keys(f"compose-{secrets.token_hex(4)}")
    return {
        # one line each: the PEMs' line breaks as `\n`, which the settings accept
        **{name: value.replace("\n", "\\n") for name, value in jwt.items()},
        "ADMIN_PASSWORD": secrets.token_urlsafe(24),
        "POSTGRES_PASSWORD": secrets.token_hex(24),  # in DATABASE_URL too: hex needs no quoting
        "MOTO_ACCESS_KEY_ID": secrets.token_hex(10).upper(),
        "MOTO_SECRET_ACCESS_KEY": secrets.token_urlsafe(30),
        "FAKE_STRIPE_API_KEY": f"sk_test_{secrets.token_hex(24)}",
        "FAKE_STRIPE_WEBHOOK_SECRET": f"whsec_{secrets.token_hex(24)}",
    }


# Made together, replaced together: a private key belongs with its public half and kid.
GROUPS = (("JWT_PRIVATE_KEY", "JWT_PUBLIC_KEYS", "JWT_KEY_ID"), ("ADMIN_PASSWORD",),
          ("POSTGRES_PASSWORD",), ("MOTO_ACCESS_KEY_ID",), ("MOTO_SECRET_ACCESS_KEY",),
          ("FAKE_STRIPE_API_KEY",), ("FAKE_STRIPE_WEBHOOK_SECRET",))
NAMES = tuple(name for group in GROUPS for name in group)


def read(path: Path = ENV_FILE) -> dict[str, str]:
    """The `NAME='value'` lines this module writes (single quotes: compose takes them as is)."""
    values: dict[str, str] = {}
    if not path.exists():
        return values
    for line in path.read_text().splitlines():
        name, sep, value = line.partition("=")
        value = value.strip()
        if len(value) > 1 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        if sep and not line.startswith("#"):
            values[name.strip()] = value
    return values


def fill(values: dict[str, str]) -> dict[str, str]:
    """`values` with every missing name made; a group is remade whole if any of it is missing."""
    fresh, out = _fresh(), dict(values)
    for group in GROUPS:
        if not all(out.get(name) for name in group):
            out.update({name: fresh[name] for name in group})
    return out


def write(path: Path = ENV_FILE) -> list[str]:
    """Add what `.env` lacks (readable by its owner only); returns the names added."""
    before = read(path)
    after = fill(before)
    for name, value in after.items():
        if "'" in value or "\n" in value:
            raise ValueError(f"{name}: a value for .env may hold no quote and no line break")
    text = HEADER + "".join(f"{name}='{value}'\n" for name, value in after.items())
    temporary = path.with_name(f"{path.name}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
    os.replace(temporary, path)
    return [name for name in after if before.get(name) != after[name]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write docker-compose's secrets to .env.")
    parser.add_argument("--path", type=Path, default=ENV_FILE)
    args = parser.parse_args(argv)
    added = write(args.path)
    print(f"{args.path}: added {', '.join(added)}" if added else f"{args.path}: complete",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
