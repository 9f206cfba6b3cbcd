"""boto3 clients for S3 (avatars), SES (email) and SNS (SMS), at AWS_ENDPOINT_URL when set.

boto3 (~0.15 s to import) is loaded with the first client, by the functions that send.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from shared.runtime.config import settings


@cache
def client(service: str) -> Any:
    """One client per service and process; boto3 clients are thread-safe."""
    import boto3
    from botocore.config import Config

    cfg = settings()
    return boto3.client(
        service,
        endpoint_url=cfg.aws_endpoint_url or None,
        region_name=cfg.aws_region,
        config=Config(retries={"max_attempts": 3, "mode": "standard"},
                      connect_timeout=5, read_timeout=15),
    )
