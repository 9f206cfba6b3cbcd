"""The process's botocore session, and clients for S3 (avatars), at AWS_ENDPOINT_URL when set.

The clients are botocore's, from one session per process: `boto3.client` is
the same client behind a default session, but importing boto3 also loads its
resource layer, which we never use, into every cold start. botocore is loaded
with the first client. SES and SNS go
through `awsquery` instead, which signs with this session's credentials.
"""

from __future__ import annotations

import threading
from functools import cache
from typing import Any

from shared.runtime.config import settings

# A botocore session is not thread-safe while it creates clients; the clients are.
_creating = threading.Lock()


@cache
def session() -> Any:
    """The process's botocore session: its credential chain, its loader and model cache."""
    import botocore.session

    return botocore.session.get_session()


@cache
def client(service: str) -> Any:
    """One client per service and process, all from one session (its models loaded once)."""
    from botocore.config import Config

    cfg = settings()
    with _creating:
        return session().create_client(
            service,
            endpoint_url=cfg.aws_endpoint_url or None,
            region_name=cfg.aws_region,
            config=Config(retries={"max_attempts": 3, "mode": "standard"},
                          connect_timeout=5, read_timeout=15),
        )
