"""Turn Redis `expired` keyspace notifications into reservation.expired events.

The low-latency path to a hold's end. Redis notifications are fire and
forget (a notification sent while nobody listens is lost, and `expired` fires
when Redis gets round to deleting the key), so the sweeper backs this up;
both produce the same CloudEvent id. Runs as a long-lived process: locally a
thread of the stack, in a cluster a ContainerSource posting to its K_SINK or
a Deployment producing to Kafka.

    python -m functions.hold_expiry_watcher

It is no functions-framework function, so the routing declaration skips it,
but `load()` imports it with the others: Redis and requests load in `watch`
and `sink_publisher`, not here.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

from shared.domain import holds
from shared.runtime import logs, tracing
from shared.runtime.config import settings
from shared.runtime.envelope import Envelope, to_http_binary, to_kafka
from shared.runtime.kafka import KafkaPublisher

log = logging.getLogger("marketplace.hold_expiry_watcher")
SOURCE = "/marketplace/functions/hold-expiry-watcher"
WAIT_SECONDS = 30.0  # a blocked wait's bound: how often an idle watcher wakes for nothing

Publish = Callable[[Envelope[Any]], None]


def watch(redis_url: str, publish: Publish, stop: threading.Event,
          ready: threading.Event | None = None) -> None:
    """Listen until `stop` is set; reconnect when the connection drops.

    It blocks on the subscription rather than polling it: setting `stop`
    publishes on a channel of its own, which ends the wait at once.
    """
    db = int((urlparse(redis_url).path or "/0").lstrip("/") or 0)
    channel = f"__keyevent@{db}__:expired"
    wake = f"marketplace:hold-expiry-watcher:stop:{uuid.uuid4().hex}"
    import redis

    waker = threading.Thread(target=_wake_on_stop, args=(redis_url, wake, stop),
                             name="hold-expiry-watcher-stop", daemon=True)
    waker.start()
    while not stop.is_set():
        client: Any = redis.Redis.from_url(redis_url)
        try:
            try:
                client.config_set("notify-keyspace-events", "Ex")
            except redis.ResponseError:  # managed Redis: configured by its operator
                log.warning("could not enable keyspace notifications; relying on the sweeper")
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(channel, wake)
            if ready is not None:
                ready.set()
            while not stop.is_set():
                message = pubsub.get_message(timeout=WAIT_SECONDS)
                if message is None or message["channel"].decode() != channel:
                    continue
                _expired(message["data"].decode(), publish)
        except (redis.ConnectionError, OSError):
            if not stop.is_set():
                log.warning("lost the Redis connection; reconnecting", exc_info=True)
            stop.wait(1.0)
        finally:
            client.close()


def _wake_on_stop(redis_url: str, wake: str, stop: threading.Event) -> None:
    """Once `stop` is set, publish on the watcher's own channel so its wait ends now."""
    import redis

    stop.wait()
    try:
        client: Any = redis.Redis.from_url(redis_url, socket_timeout=2)
        try:
            client.publish(wake, b"stop")
        finally:
            client.close()
    except (redis.RedisError, OSError):  # Redis is away: the wait ends on its own timeout
        pass


def _expired(name: str, publish: Publish) -> None:
    """Publish the expiry a key's name describes, in its booking's trace."""
    parsed = holds.parse_key(name)
    if parsed is None:
        return
    started = time.perf_counter()
    span = tracing.begin("hold_expiry_watcher", "internal", holds.trace_of_key(name))
    envelope = holds.expiry_event(*parsed, "watcher", SOURCE, traceparent=span.traceparent)
    span.attributes.update({"cloudevents.event_id": envelope.id,
                            "cloudevents.event_type": envelope.type,
                            "cloudevents.event_subject": envelope.subject})
    outcome = "published"
    try:
        publish(envelope)
    except Exception:  # the broker is away: the sweeper finds this hold
        outcome = "transient"
        log.warning("could not publish the expiry of %s; the sweeper will",
                    parsed[0], exc_info=True)
    tracing.end(span, "" if outcome == "published" else "not published")
    logs.event("hold_expiry_watcher", envelope.id, envelope.type, envelope.subject,
               span.trace_id, outcome, time.perf_counter() - started, 1)


def kafka_publisher(bootstrap: str) -> Publish:
    producer = KafkaPublisher(bootstrap)
    return lambda envelope: producer.send_all([to_kafka(envelope)])


def sink_publisher(sink: str) -> Publish:
    """Post to a ContainerSource's K_SINK (a KafkaSink writes it to the topic)."""
    import requests

    session = requests.Session()

    def publish(envelope: Envelope[Any]) -> None:
        headers, body = to_http_binary(envelope)
        session.post(sink, data=body, headers=headers, timeout=10).raise_for_status()

    return publish


def main() -> None:
    logs.setup()
    cfg = settings()
    sink = os.environ.get("K_SINK")
    publish = sink_publisher(sink) if sink else kafka_publisher(cfg.kafka_bootstrap_servers)
    watch(cfg.redis_url, publish, threading.Event())


if __name__ == "__main__":
    main()
