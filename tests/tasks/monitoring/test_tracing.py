"""Tracing: on only when OTEL_* ask for it, and one trace from an API request to the handler a
real worker runs, whether the commit or the relay sent it; a requeue linked to the original."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import Client
from django.utils import timezone
from opentelemetry import trace

from tasks.messaging.relay import outbox_relay_once
from tasks.models import DeadLetter, Delivery
from tasks.monitoring.tracing import _exporters_from_environment, tracing_requested
from tasks.reliability.dead_letters import dead_letter_requeue
from tasks.transaction import register_event
from tests.marketplace.factories import FANCY_BUTTON_SOURCE, UserFactory, issue_key
from tests.support.api import API, bearer
from tests.support.broker import broker_down
from tests.support.deliveries import HANDLER, ItemStored, recorded_delivery
from tests.support.ledger.handlers import LedgerEvent
from tests.support.otlp import OtlpReceiver
from tests.support.processes import CeleryWorker, process_env
from tests.support.publisher import publisher_reset
from tests.support.tracing import named, span_id, spans_in_memory, trace_id
from tests.support.waiting import wait_until

UPLOAD_HANDLER = "marketplace.handlers.process_component_upload"


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "shop"}, False),
        ({"OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, False),
    ],
)
def test_tracing_is_on_only_when_the_standard_variables_ask_for_it(environ, expected):
    assert tracing_requested(environ) is expected


def test_an_exporter_or_protocol_that_is_not_installed_is_refused_by_name():
    with pytest.raises(ImproperlyConfigured, match="'zipkin' is not one of otlp, console, none"):
        _exporters_from_environment({"OTEL_TRACES_EXPORTER": "zipkin"})
    with pytest.raises(ImproperlyConfigured, match="'grpc' is not installed"):
        _exporters_from_environment({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})


@pytest.fixture
def traced_worker():
    """A real worker exporting its spans over OTLP/HTTP to a receiver in this process."""
    with OtlpReceiver() as receiver:
        env = process_env(
            OTEL_TRACES_EXPORTER="otlp",
            OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=receiver.url,
            OTEL_BSP_SCHEDULE_DELAY="100",
            OTEL_SERVICE_NAME="worker-under-test",
            TASKS_RETRY_BACKOFF_MAX="1",
        )
        with CeleryWorker(env=env) as worker:
            yield receiver, worker


def upload(client: Client) -> None:
    key = issue_key(UserFactory())
    response = client.post(
        f"{API}/components",
        {"name": "Fancy Button", "source": FANCY_BUTTON_SOURCE},
        content_type="application/json",
        headers=bearer(key),
    )
    assert response.status_code == 201, response.content


def assert_one_trace_from_request_to_handler(memory, receiver, worker) -> None:
    [request] = [s for s in memory.get_finished_spans() if s.kind == trace.SpanKind.SERVER]
    [registered] = named(memory, "register_event marketplace.events.ComponentUploaded")
    assert trace_id(registered) == trace_id(request)
    handled = wait_until(
        lambda: receiver.named(f"handle {UPLOAD_HANDLER}"), timeout=60, message=lambda: worker.log()[-3000:]
    )
    [run] = [s for s in receiver.named("run/tasks.deliver") if s.span_id == handled[0].parent_span_id]
    assert {s.trace_id for s in (*handled, run)} == {trace_id(request)}
    assert handled[0].service == "worker-under-test"
    # The publish span (this process) is the run's parent: one chain, not just one id.
    publishes = [s for s in named(memory, "apply_async/tasks.deliver") if span_id(s) == run.parent_span_id]
    assert publishes and trace_id(publishes[0]) == trace_id(request)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("api_rate_limit_cache")
def test_one_trace_runs_from_the_api_request_through_the_publish_to_the_workers_handler(traced_worker):
    receiver, worker = traced_worker
    with spans_in_memory() as memory:
        upload(Client())
        publisher_reset()  # what the commit handed the publisher thread is sent now
        assert_one_trace_from_request_to_handler(memory, receiver, worker)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("api_rate_limit_cache")
def test_the_trace_continues_when_the_broker_was_down_at_commit_and_the_relay_sent_it_later(traced_worker):
    receiver, worker = traced_worker
    with spans_in_memory() as memory:
        with broker_down():
            upload(Client())
        assert not receiver.named("handle ")
        assert outbox_relay_once(grace=timedelta(0)) == 1  # minutes later, in another span or none

        assert_one_trace_from_request_to_handler(memory, receiver, worker)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_retry_stays_in_the_trace_of_the_request_that_registered_the_event(traced_worker, tmp_path):
    receiver, worker = traced_worker
    flag = tmp_path / "works-now"
    handler = "tests.support.ledger.handlers.fail_until_flag"
    with spans_in_memory():
        with trace.get_tracer("tests").start_as_current_span("a request") as request:
            register_event(LedgerEvent(key="retried", mode="transient", flag_path=str(flag)))
        publisher_reset()
        wait_until(lambda: receiver.named(f"handle {handler}"), timeout=60, message=lambda: worker.log()[-3000:])
        flag.touch()
        handled = wait_until(
            lambda: len(receiver.named(f"handle {handler}")) >= 2 and receiver.named(f"handle {handler}"), timeout=60
        )

    # The run span of the retry ends after its handler span, so it can reach the receiver a batch later.
    runs = wait_until(lambda: len(receiver.named("run/tasks.deliver")) >= 2 and receiver.named("run/tasks.deliver"))

    assert {span.trace_id for span in handled} == {f"{request.get_span_context().trace_id:032x}"}
    assert {span.trace_id for span in runs} == {f"{request.get_span_context().trace_id:032x}"}


@pytest.mark.django_db
def test_a_requeue_is_a_new_span_linked_to_the_span_that_registered_the_event(redis_client):
    with spans_in_memory() as memory:
        tracer = trace.get_tracer("tests")
        with tracer.start_as_current_span("the original request") as original:
            context = original.get_span_context()
        message = ItemStored(item_id=1)
        traceparent = f"00-{context.trace_id:032x}-{context.span_id:016x}-01"
        recorded_delivery(
            message, handler=HANDLER, status=Delivery.Status.DEAD, trace_context={"traceparent": traceparent}
        )
        now = timezone.now()
        dead = DeadLetter.objects.create(
            task_name="tasks.deliver",
            message_id=message.message_id,
            message_type=message.message_name,
            handler=HANDLER,
            payload=message.to_json(),
            queue="default",
            first_failed_at=now,
            last_failed_at=now,
        )

        dead_letter_requeue(dead_letter=dead)

        [requeue] = named(memory, f"requeue {HANDLER}")
        assert [(link.context.trace_id, link.context.span_id) for link in requeue.links] == [
            (context.trace_id, context.span_id)
        ]
        assert requeue.context.trace_id != context.trace_id  # new work, its own trace
        [publish] = named(memory, "apply_async/tasks.deliver")
        assert publish.parent.span_id == requeue.context.span_id
        stored = Delivery.objects.get(message_id=message.message_id).trace_context["traceparent"]
        assert stored.split("-")[1:3] == [trace_id(requeue), span_id(requeue)]  # the sweeper continues it
