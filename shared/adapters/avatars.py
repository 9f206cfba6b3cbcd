"""Avatar images: checked to be what they claim, stored in S3, replaced and deleted there."""

from __future__ import annotations

import json
import struct
import threading
import uuid
from contextlib import suppress
from dataclasses import dataclass

import flask

from shared.adapters.aws import client
from shared.edge.api import Problem
from shared.runtime.config import settings

MAX_BYTES = 2 * 1024 * 1024
MEDIA_TYPES = ("image/png", "image/jpeg")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_bucket_ready = threading.Event()


@dataclass(frozen=True)
class Image:
    data: bytes
    media_type: str

    @property
    def extension(self) -> str:
        return "png" if self.media_type == "image/png" else "jpg"


@dataclass(frozen=True)
class Stored:
    key: str
    url: str


def _looks_like(data: bytes, media_type: str) -> bool:
    if media_type == "image/png":
        # signature, then the IHDR chunk with a non-zero width and height
        if len(data) < 33 or not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
            return False
        width, height = struct.unpack(">II", data[16:24])
        return bool(width > 0 and height > 0)
    # JPEG: start-of-image marker, then another marker; end-of-image at the end
    return len(data) >= 4 and data[:3] == b"\xff\xd8\xff" and data.rstrip(b"\0")[-2:] == (
        b"\xff\xd9")


def read_image(raw: flask.Request) -> Image:
    """The uploaded image, or a 4xx saying what is wrong with it."""
    media_type = (raw.mimetype or "").lower()
    if media_type not in MEDIA_TYPES:
        raise Problem(415, "Unsupported Media Type", "send the image as image/png or image/jpeg")
    if raw.content_length is not None and raw.content_length > MAX_BYTES:
        raise Problem(413, "Content Too Large", "an avatar may be at most 2 MiB")
    data = raw.stream.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise Problem(413, "Content Too Large", "an avatar may be at most 2 MiB")
    if not data:
        raise Problem(400, "Bad Request", "the body is empty; send the image")
    if not _looks_like(data, media_type):
        kind = "PNG" if media_type == "image/png" else "JPEG"
        raise Problem(422, "Validation Failed", f"the body is not a {kind} image",
                      [{"field": "body", "message": f"not a valid {kind} image"}])
    return Image(data, media_type)


def _ensure_bucket() -> None:
    """Create the bucket on first use (a bucket that exists is configured by its owner)."""
    if _bucket_ready.is_set():
        return
    s3 = client("s3")
    bucket = settings().avatar_bucket
    try:
        s3.head_bucket(Bucket=bucket)
    except Exception:
        kwargs = {}
        if settings().aws_region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": settings().aws_region}
        with suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=bucket, **kwargs)
        # Avatars are public pictures: anyone may read `avatars/*`, nothing else.
        s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Sid": "PublicAvatars", "Effect": "Allow", "Principal": "*",
                           "Action": "s3:GetObject",
                           "Resource": f"arn:aws:s3:::{bucket}/avatars/*"}],
        }))
    _bucket_ready.set()


def public_url(key: str) -> str:
    cfg = settings()
    if cfg.aws_endpoint_url:
        return f"{cfg.aws_endpoint_url.rstrip('/')}/{cfg.avatar_bucket}/{key}"
    return f"https://{cfg.avatar_bucket}.s3.{cfg.aws_region}.amazonaws.com/{key}"


def store(user_id: uuid.UUID, image: Image) -> Stored:
    """Upload under a new key each time, so a cached old avatar never shows the new one."""
    _ensure_bucket()
    key = f"avatars/{user_id}/{uuid.uuid4().hex}.{image.extension}"
    client("s3").put_object(Bucket=settings().avatar_bucket, Key=key, Body=image.data,
                            ContentType=image.media_type, CacheControl="public, max-age=86400")
    return Stored(key, public_url(key))


def delete(key: str) -> None:
    client("s3").delete_object(Bucket=settings().avatar_bucket, Key=key)
