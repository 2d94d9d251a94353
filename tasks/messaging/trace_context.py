"""Trace context that outlives the request: captured when an event is registered, restored at every send.

The Celery instrumentation links a task to whatever span is current when it is published. The
platform publishes after commit from a publisher thread, or minutes later from the relay or the
sweeper, where the request's span is long gone; so the registering span's W3C context
(``traceparent``, ``tracestate``) is stored on the outbox and delivery rows, and each send of a
delivery runs inside it. With no tracer provider configured (tracing off) nothing is captured,
and restoring an empty context is a no-op.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

from opentelemetry import context, propagate, trace

tracer = trace.get_tracer("tasks")


def trace_context_capture() -> dict[str, str]:
    """The current span's context as W3C headers; empty when no span is recording."""
    if not trace.get_current_span().get_span_context().is_valid:
        return {}
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


@contextlib.contextmanager
def trace_context_restored(carrier: Mapping[str, str] | None) -> Iterator[None]:
    """Make the stored context current inside the block (nothing to do when it is empty)."""
    if not carrier:
        yield
        return
    token = context.attach(propagate.extract(dict(carrier)))
    try:
        yield
    finally:
        context.detach(token)


def trace_link(carrier: Mapping[str, str] | None) -> list[trace.Link]:
    """A link to the span a stored context names (for work started anew from it, such as a requeue)."""
    span_context = trace.get_current_span(propagate.extract(dict(carrier or {}))).get_span_context()
    return [trace.Link(span_context)] if span_context.is_valid else []
