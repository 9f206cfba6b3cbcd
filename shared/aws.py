"""boto3 clients for S3 (avatars), SES (email) and SNS (SMS), at AWS_ENDPOINT_URL when set."""

from __future__ import annotations

from functools import cache
from typing import Any

import boto3
from botocore.config import Config

from shared.config import settings


@cache
def client(service: str) -> Any:
    """One client per service and process; boto3 clients are thread-safe."""
    cfg = settings()
    return boto3.client(
        service,
        endpoint_url=cfg.aws_endpoint_url or None,
        region_name=cfg.aws_region,
        config=Config(retries={"max_attempts": 3, "mode": "standard"},
                      connect_timeout=5, read_timeout=15),
    )
