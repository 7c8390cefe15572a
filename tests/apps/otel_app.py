"""Handlers and an OpenTelemetry SDK set-up for the cross-process tracing tests (issue 16).

Imported by a ``jobrunner-worker --app apps.otel_app`` subprocess and by the enqueuer script
(``python -m apps.otel_enqueue``). The SDK's in-memory span exporter collects the spans; each
export is also appended to ``$OTEL_SPANS_FILE`` as JSON lines, so the test process (which never
configures OpenTelemetry itself) reads what every process recorded, even one that is killed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from jobrunner import JobContext, RetryPolicy, job


class FileBackedExporter(InMemorySpanExporter):
    """The SDK's in-memory exporter, also writing each span to a file as it ends."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = super().export(spans)
        with open(self.path, "a", encoding="utf-8") as out:
            for span in spans:
                out.write(json.dumps(_plain(span)) + "\n")
        return result


def _plain(span: ReadableSpan) -> dict[str, Any]:
    context = span.get_span_context()
    assert context is not None
    return {
        "name": span.name,
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_id": f"{span.parent.span_id:016x}" if span.parent else None,
        "kind": span.kind.name,
        "attributes": dict(span.attributes or {}),
        "status": span.status.status_code.name,
        "events": [{"name": e.name, "attributes": dict(e.attributes or {})} for e in span.events],
        "service": (span.resource.attributes or {}).get("service.name"),
        "pid": os.getpid(),
    }


EXPORTER = FileBackedExporter(os.environ["OTEL_SPANS_FILE"])
_provider = TracerProvider(
    resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE", "jobrunner-test")})
)
_provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
trace.set_tracer_provider(_provider)


@job("otel-invoice", retry=RetryPolicy(max_attempts=1))
async def otel_invoice(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
    """Two steps, the second with a span of the handler's own inside."""
    async with ctx.step("render"):
        pass
    async with ctx.step("send"):
        with trace.get_tracer("invoicing").start_as_current_span("smtp"):
            pass
    return {"invoice": data["number"], "pid": os.getpid()}


@job("otel-sync", retry=RetryPolicy(max_attempts=1))
def otel_sync(ctx: Any, data: dict[str, Any]) -> str:
    """A plain ``def`` handler: its thread sees the attempt's span as current."""
    with ctx.step("compute"), trace.get_tracer("invoicing").start_as_current_span("inner"):
        return "ok"


@job("otel-broken", retry=RetryPolicy(max_attempts=1))
async def otel_broken(ctx: JobContext, data: dict[str, Any]) -> None:
    """Fails for good: the attempt's span records the error."""
    raise ValueError("card declined")
