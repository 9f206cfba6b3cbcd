"""Exporting spans with OpenTelemetry, only when someone collects them.

Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` is set (or a test installs an
exporter): then the SDK and the OTLP/HTTP exporter are imported on the first
finished span (never at a function's import), and spans leave
in batches from the SDK's own thread. Standard `OTEL_*` variables apply
(`OTEL_SERVICE_NAME`, `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_EXPORTER_OTLP_HEADERS`...).

A `tracing.Span` already chose its ids (they went out in the events it
emitted), so the SDK is given an id generator that returns those ids for the
span being recorded: the exported span is exactly the one the events name.
"""

from __future__ import annotations

import atexit
import os
import threading
from typing import Any

from shared.runtime.tracing import Span

ENDPOINT_VARIABLE = "OTEL_EXPORTER_OTLP_ENDPOINT"

_lock = threading.Lock()
_tracer: Any = None
_provider: Any = None
_installed: bool = False
_preset = threading.local()


def enabled() -> bool:
    """Whether finished spans are exported: an endpoint is configured, or a test installed one."""
    return _installed or bool(os.environ.get(ENDPOINT_VARIABLE))


def _ids() -> Any:
    from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator

    class PresetIds(IdGenerator):
        """The ids of the span being recorded; random ones for anything else."""

        fallback = RandomIdGenerator()

        def generate_span_id(self) -> int:
            span_id: int | None = getattr(_preset, "span_id", None)
            return span_id if span_id is not None else self.fallback.generate_span_id()

        def generate_trace_id(self) -> int:
            trace_id: int | None = getattr(_preset, "trace_id", None)
            return trace_id if trace_id is not None else self.fallback.generate_trace_id()

    return PresetIds()


def install(processor: Any = None) -> Any:
    """Export through `processor` (tests: an in-memory exporter), or OTLP/HTTP by default."""
    global _tracer, _provider, _installed
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    if processor is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        processor = BatchSpanProcessor(OTLPSpanExporter())
    service = os.environ.get("OTEL_SERVICE_NAME") or os.environ.get("K_SERVICE") or "marketplace"
    provider = TracerProvider(resource=Resource.create({"service.name": service}),
                              id_generator=_ids())
    provider.add_span_processor(processor)
    if _provider is not None:
        _provider.shutdown()
    else:
        atexit.register(lambda: _provider is not None and _provider.shutdown())
    _provider, _installed = provider, True
    _tracer = provider.get_tracer("marketplace")
    return provider


def uninstall() -> None:
    """Back to the environment's choice (tests)."""
    global _tracer, _provider, _installed
    with _lock:
        if _provider is not None:
            _provider.shutdown()
        _tracer, _provider, _installed = None, None, False


def _get_tracer() -> Any:
    with _lock:
        if _tracer is None:
            install()
        return _tracer


def record(span: Span, end_ns: int, error: str = "") -> None:
    """Export `span` with its own ids, under its parent's context."""
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags
    from opentelemetry.trace.span import TraceState
    from opentelemetry.trace.status import Status, StatusCode

    tracer = _get_tracer()
    context = None
    if span.parent_id:
        state = TraceState.from_header([span.tracestate]) if span.tracestate else None
        parent = SpanContext(int(span.trace_id, 16), int(span.parent_id, 16), is_remote=True,
                             trace_flags=TraceFlags(int(span.flags, 16)), trace_state=state)
        context = trace.set_span_in_context(NonRecordingSpan(parent))
    kind = {"server": SpanKind.SERVER, "consumer": SpanKind.CONSUMER}.get(span.kind,
                                                                          SpanKind.INTERNAL)
    _preset.trace_id, _preset.span_id = int(span.trace_id, 16), int(span.span_id, 16)
    try:
        recorded = tracer.start_span(span.name, context=context, kind=kind,
                                     attributes=span.attributes, start_time=span.start_ns)
    finally:
        _preset.trace_id = _preset.span_id = None
    if error:
        recorded.set_status(Status(StatusCode.ERROR, error))
    recorded.end(end_time=end_ns)
