"""Tracing in the test process: spans into memory while a test asks for them.

The tracer provider of a process can be set once, so the first test that traces sets it (with an
in-memory exporter) for the rest of the run; each test turns the instrumentations on and off
again and starts with an empty exporter, and spans ended outside such a test are not kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tasks.monitoring.tracing import tracing_configure, tracing_instrument, tracing_uninstrument

EXPORTER = InMemorySpanExporter()


class _WhileTracing(SimpleSpanProcessor):
    """Exports only inside ``spans_in_memory``: the other tests' spans are not kept."""

    active = False

    def on_end(self, span: ReadableSpan) -> None:
        if self.active:
            super().on_end(span)


_PROCESSOR = _WhileTracing(EXPORTER)


@contextmanager
def spans_in_memory() -> Iterator[InMemorySpanExporter]:
    """Trace this process into ``EXPORTER`` inside the block."""
    tracing_configure(process="tests", span_processor=_PROCESSOR)
    tracing_instrument()
    EXPORTER.clear()
    _PROCESSOR.active = True
    try:
        yield EXPORTER
    finally:
        _PROCESSOR.active = False
        tracing_uninstrument()
        EXPORTER.clear()


def trace_id(span: ReadableSpan) -> str:
    return format(span.context.trace_id, "032x")


def span_id(span: ReadableSpan) -> str:
    return format(span.context.span_id, "016x")


def named(exporter: InMemorySpanExporter, prefix: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name.startswith(prefix)]
