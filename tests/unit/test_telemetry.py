"""Trace context, log lines and metrics, without the stack."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from shared.domain import holds
from shared.domain.events import BookingRequested
from shared.runtime import logs, tracing
from shared.runtime.envelope import Envelope, from_kafka, kafka_headers_to_http, to_kafka

ROOT = Path(__file__).resolve().parents[2]
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


def test_traceparent_is_parsed_and_continued() -> None:
    assert tracing.parse(f"00-{TRACE}-{PARENT}-01") == (TRACE, PARENT, "01")
    for bad in (None, "", "garbage", f"ff-{TRACE}-{PARENT}-01", f"00-{'0' * 32}-{PARENT}-01",
                f"00-{TRACE}-{'0' * 16}-01", f"00-{TRACE[:-1]}-{PARENT}-01"):
        assert tracing.parse(bad) is None
    span = tracing.begin("reserve_ticket", "consumer", f"00-{TRACE}-{PARENT}-01", "k=v")
    assert (span.trace_id, span.parent_id, span.tracestate) == (TRACE, PARENT, "k=v")
    assert span.traceparent == f"00-{TRACE}-{span.span_id}-01" and span.span_id != PARENT
    fresh = tracing.begin("bookings", "server", None)
    assert fresh.parent_id == "" and len(fresh.trace_id) == 32 and not fresh.continued


def test_a_request_without_context_adopts_the_bookings_trace_but_one_with_it_keeps_its_own(
        ) -> None:
    started = tracing.begin("bookings", "server", None)
    started.adopt(f"00-{TRACE}-{PARENT}-01")
    assert (started.trace_id, started.parent_id) == (TRACE, PARENT)
    other = "0af7651916cd43dd8448eb211c80319c"
    given = tracing.begin("bookings", "server", f"00-{other}-{PARENT}-01")
    given.adopt(f"00-{TRACE}-{PARENT}-01")
    assert given.trace_id == other


def test_the_context_travels_as_the_cloudevents_extension() -> None:
    event = BookingRequested.model_validate({
        "booking_id": "b0000000-0000-4000-8000-000000000001",
        "user_id": "a0000000-0000-4000-8000-000000000001",
        "course_id": "c0000000-0000-4000-8000-000000000001",
        "requested_at": "2026-11-25T10:00:00Z"})
    traceparent = f"00-{TRACE}-{PARENT}-01"
    record = to_kafka(Envelope(data=event, source="/test", traceparent=traceparent,
                               tracestate="k=v"))
    headers = dict(record.headers)
    assert headers["ce_traceparent"] == traceparent.encode()
    assert headers["ce_tracestate"] == b"k=v"
    http = kafka_headers_to_http(record.headers)
    assert http["ce-traceparent"] == http["traceparent"] == traceparent
    decoded = from_kafka(record.headers, record.value)
    assert (decoded.traceparent, decoded.tracestate) == (traceparent, "k=v")
    plain = to_kafka(Envelope(data=event, source="/test"))
    assert not any(n == "ce_traceparent" for n, _ in plain.headers)  # none: none sent
    assert from_kafka(plain.headers, plain.value).traceparent == ""


def test_a_hold_key_carries_the_bookings_trace_and_old_keys_still_parse() -> None:
    old = f"{holds.KEY_PREFIX}b0000000-0000-4000-8000-000000000001:1700000000000"
    booking = holds.parse_key(old)
    assert booking is not None
    traceparent = f"00-{TRACE}-{PARENT}-01"
    name = holds.key(booking[0], booking[1], traceparent)
    assert holds.parse_key(name) == booking
    assert holds.trace_of_key(name) == traceparent
    assert holds.trace_of_key(holds.key(booking[0], booking[1])) == ""


def _record(**fields: object) -> logging.LogRecord:
    record = logging.LogRecord("marketplace.events", logging.INFO, __file__, 1,
                               "%s %s", ("open_hold", "handled"), None)
    record.__dict__.update(fields)
    return record


def test_log_lines_are_json_or_text_as_configured() -> None:
    fields = {"function": "open_hold", "event_id": "e1", "type": "marketplace.ticket.reserved",
              "subject": "b1", "trace_id": TRACE, "outcome": "handled", "duration_ms": 1.5,
              "attempt": 1}
    line = json.loads(logs.formatter("json").format(_record(**fields)))
    assert {k: line[k] for k in fields} == fields
    assert line["level"] == "info" and line["time"].endswith("Z")
    text = logs.formatter("text").format(_record(**fields))
    assert "open_hold handled" in text and f"trace_id={TRACE}" in text and "{" not in text


def _count_in_child(directory: str, n: int) -> None:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    from shared.runtime import metrics

    metrics.load()
    for _ in range(n):
        metrics.event("reserve_ticket", "handled", 0.01)


def test_metrics_add_up_over_worker_processes(tmp_path: Path) -> None:
    """What two workers counted, one scrape shows summed (multiprocess mode)."""
    script = f"""
import multiprocessing, os, sys
sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(ROOT / 'tests' / 'unit')!r})
os.environ["PROMETHEUS_MULTIPROC_DIR"] = {str(tmp_path)!r}
from test_telemetry import _count_in_child
ctx = multiprocessing.get_context("fork")
workers = [ctx.Process(target=_count_in_child, args=({str(tmp_path)!r}, n)) for n in (3, 4)]
[w.start() for w in workers]; [w.join() for w in workers]
from shared.runtime import metrics
print(metrics.exposition()[0].decode())
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, cwd=ROOT, check=True).stdout
    assert 'marketplace_events_total{function="reserve_ticket",outcome="handled"} 7.0' in out
    assert 'marketplace_handler_duration_seconds_count{function="reserve_ticket"} 7.0' in out
