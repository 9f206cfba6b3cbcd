"""Shared fixtures: real backing servers for the whole session, a clean database per test.

Each server is the one configured in the environment (DATABASE_URL, REDIS_URL,
AWS_ENDPOINT_URL, ELASTICSEARCH_URL) or else one started from its wheel
(`tests.helpers.servers`), so the suite needs nothing installed on the machine.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from local.stack import embedded
from shared import migrations
from shared.edge.tokens import generate_keys
from shared.runtime import bootstrap
from shared.runtime.bootstrap import Runtime
from shared.runtime.config import settings
from shared.runtime.db import Database
from tests.helpers.servers import configured_or_embedded

os.environ.setdefault("MARKETPLACE_LOCAL", "1")
if not os.environ.get("JWT_PUBLIC_KEYS") and not os.environ.get("JWT_PRIVATE_KEY"):
    os.environ.update(generate_keys("test"))  # one pair per run, as the local stack makes


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stack")


@pytest.fixture(scope="session")
def database_url(workdir: Path) -> Iterator[str]:
    with configured_or_embedded("DATABASE_URL", embedded.start_postgres, workdir) as url:
        yield url


@pytest.fixture(scope="session")
def migrated(database_url: str) -> str:
    """The schema, applied once per session as the deployment's Job would."""
    db = Database(database_url, size=1)
    migrations.migrate(db)
    db.close()
    return database_url


@pytest.fixture(scope="session")
def redis_url(workdir: Path) -> Iterator[str]:
    with configured_or_embedded("REDIS_URL", embedded.start_redis, workdir) as url:
        yield url


def _embedded_aws(workdir: Path) -> embedded.EmbeddedServer:
    """moto's server, with the keys boto3 insists on (moto takes any)."""
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")
    return embedded.start_aws(workdir)


@pytest.fixture(scope="session")
def aws_url(workdir: Path) -> Iterator[str]:
    """An AWS endpoint (S3, SES, SNS)."""
    with configured_or_embedded("AWS_ENDPOINT_URL", _embedded_aws, workdir) as url:
        yield url


@pytest.fixture(scope="session")
def search_url(workdir: Path) -> Iterator[str]:
    """A search cluster: the embedded one is OpenSearch-compatible."""
    with configured_or_embedded("ELASTICSEARCH_URL", embedded.start_search, workdir) as url:
        yield url


@pytest.fixture
def rt(migrated: str, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    """A runtime on clean state whose emitted events stay in the outbox for the test to read."""
    monkeypatch.setenv("DATABASE_URL", migrated)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    settings.cache_clear()
    runtime = bootstrap.build(publish=False)
    with runtime.db.transaction() as tx:
        tables = [r["tablename"] for r in tx.all(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            " AND tablename <> 'schema_migrations'")]
        tx.execute(f"TRUNCATE {', '.join(tables)}")
    runtime.redis.flushdb()
    bootstrap.install(runtime)
    yield runtime
    bootstrap.install(None)
    runtime.close()
    settings.cache_clear()
