"""A tiny OTLP/HTTP trace receiver for the tests: what the functions' exporters send, decoded.

The functions run in other processes (the local hosts), so an in-memory exporter in the
test process would see nothing; they export exactly as they would to an OpenTelemetry
Collector, to a recording listener, and this decodes the spans it received.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.helpers.listeners import Listener


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any] = field(hash=False)


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


def _spans(body: bytes) -> list[ReceivedSpan]:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    found = []
    for resource_spans in request.resource_spans:
        service = next((_value(a.value) for a in resource_spans.resource.attributes
                        if a.key == "service.name"), "")
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                found.append(ReceivedSpan(
                    service, span.name, span.trace_id.hex(), span.span_id.hex(),
                    span.parent_span_id.hex(),
                    {a.key: _value(a.value) for a in span.attributes}))
    return found


class OtlpReceiver:
    def __init__(self) -> None:
        self.listener = Listener(headers={"Content-Type": "application/x-protobuf"},
                                 body=ExportTraceServiceResponse().SerializeToString())
        self.url = self.listener.url
        self._spans: list[ReceivedSpan] = []
        self._decoded = 0  # exports decoded so far: each is decoded once
        self._lock = threading.Lock()

    @property
    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            exports = self.listener.received()
            for export in exports[self._decoded:]:
                self._spans.extend(_spans(export.body))
            self._decoded = len(exports)
            return list(self._spans)

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        return [s for s in self.spans if s.trace_id == trace_id]

    def close(self) -> None:
        self.listener.close()
