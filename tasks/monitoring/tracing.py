"""OpenTelemetry tracing, configured by the standard ``OTEL_*`` variables alone; off unless asked for.

Tracing is on when ``OTEL_TRACES_EXPORTER`` names an exporter (``otlp``, ``console``) or an OTLP
endpoint is set (``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), and
``OTEL_SDK_DISABLED`` is not ``true``. Everything else (service name, resource attributes,
sampler, batch delays, endpoint headers, timeouts) the SDK and the OTLP exporter read from their
own ``OTEL_*`` variables. No collector is needed to run or test the platform.

Spans come from the maintained instrumentations (Django, Celery, psycopg, redis) and from the
platform's own spans where none exists (``register_event``, the handler, Beat's send of a due
run, stream appends, a requeue: ``tasks.messaging.trace_context``), which also carries a
request's context through the outbox to every send of its deliveries.

Each process sets tracing up once, at its own entry point: web in ``config/wsgi.py``, the relay
in its command, Beat on ``beat_init``, and each worker pool process on ``worker_process_init``,
as the Celery instrumentation requires (a span processor's thread does not survive a fork).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import Any

from celery.signals import beat_init, worker_process_init, worker_process_shutdown
from django.core.exceptions import ImproperlyConfigured
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.instrumentation.django import DjangoInstrumentor
from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

DEFAULT_SERVICE_NAME = "task-platform"
INSTRUMENTORS = (DjangoInstrumentor, CeleryInstrumentor, PsycopgInstrumentor, RedisInstrumentor)

_lock = threading.Lock()
_provider: TracerProvider | None = None


def tracing_requested(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment asks for tracing (see the module docstring)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = _exporter_names(environ)
    return bool(exporters) and exporters != ["none"]


def _exporter_names(environ: Mapping[str, str]) -> list[str]:
    named = [name.strip().lower() for name in environ.get("OTEL_TRACES_EXPORTER", "").split(",") if name.strip()]
    if named:
        return named
    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    return ["otlp"] if endpoint else []


def _exporters_from_environment(environ: Mapping[str, str]) -> list[SpanExporter]:
    exporters: list[SpanExporter] = []
    for name in _exporter_names(environ):
        if name == "otlp":
            protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            if protocol not in (None, "", "http/protobuf"):
                raise ImproperlyConfigured(f"OTLP protocol {protocol!r} is not installed; use http/protobuf.")
            exporters.append(OTLPSpanExporter())
        elif name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name != "none":
            raise ImproperlyConfigured(f"OTEL_TRACES_EXPORTER {name!r} is not one of otlp, console, none.")
    return exporters


def tracing_configure(*, process: str, span_processor: SpanProcessor | None = None) -> bool:
    """Set tracing up in this process if the environment asks for it (or a test gives
    ``span_processor``); instrument Django, Celery, psycopg and redis. True if tracing is on.

    Once per process: later calls change nothing (the global tracer provider cannot be replaced).
    """
    global _provider  # noqa: PLW0603 (one provider per process, as OpenTelemetry has it)
    with _lock:
        if _provider is not None:
            return True
        if span_processor is None and not tracing_requested():
            return False
        attributes: dict[str, Any] = {"platform.process": process}
        if not os.environ.get("OTEL_SERVICE_NAME"):
            attributes[SERVICE_NAME] = DEFAULT_SERVICE_NAME
        provider = TracerProvider(resource=Resource.create(attributes))
        processors = (
            [span_processor]
            if span_processor
            else [BatchSpanProcessor(exporter) for exporter in _exporters_from_environment(os.environ)]
        )
        for processor in processors:
            provider.add_span_processor(processor)
        trace.set_tracer_provider(provider)
        tracing_instrument()
        _provider = provider
        return True


def tracing_instrument() -> None:
    """Turn the instrumentations on (each does nothing when it is on already)."""
    for instrumentor in INSTRUMENTORS:
        if not instrumentor().is_instrumented_by_opentelemetry:
            instrumentor().instrument()


def tracing_uninstrument() -> None:
    """Turn the instrumentations off again (for tests; spans of the platform's own stay)."""
    for instrumentor in INSTRUMENTORS:
        if instrumentor().is_instrumented_by_opentelemetry:
            instrumentor().uninstrument()


def tracing_flush(timeout_millis: int = 5000) -> None:
    """Export what this process's span processors hold (before a pool process exits)."""
    if _provider is not None:
        _provider.force_flush(timeout_millis)


def _on_worker_process_init(**kwargs: Any) -> None:
    tracing_configure(process="worker")


def _on_worker_process_shutdown(**kwargs: Any) -> None:
    tracing_flush()


def _on_beat_init(**kwargs: Any) -> None:
    tracing_configure(process="beat")


def connect() -> None:
    """Set tracing up in worker pool processes and Beat; called from ``TasksConfig.ready()``."""
    worker_process_init.connect(_on_worker_process_init, dispatch_uid="tasks.monitoring.tracing.worker")
    worker_process_shutdown.connect(_on_worker_process_shutdown, dispatch_uid="tasks.monitoring.tracing.flush")
    beat_init.connect(_on_beat_init, dispatch_uid="tasks.monitoring.tracing.beat")
