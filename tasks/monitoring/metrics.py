"""The platform's state as Prometheus metrics, read at scrape time (a custom Collector).

Queue depth and age come from the broker, worker presence from a broadcast to the workers, the
rest from the database; all are read with the same deadline as the health checks, and
``platform_metrics_source_up`` says which source answered, so a hung broker gives a fast scrape
with the queue metrics missing, not a timeout. Queue and worker facts are exported under
celery-exporter's names too (``celery_queue_length``, ``celery_active_consumer_count``,
``celery_worker_up``, ...; see ``task_metrics`` for the task events), so its dashboards work.
"""

from __future__ import annotations

from collections.abc import Iterator

from django.conf import settings
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tasks.monitoring import selectors
from tasks.monitoring.deadline import call_concurrently
from tasks.monitoring.queue_stats import QueueStats, queue_stats
from tasks.monitoring.worker_presence import WorkerPresence, worker_presence
from tasks.queues import QUEUES
from tasks.scheduling.lease import beat_status
from tasks.scheduling.punctuality import Punctuality, schedules_punctuality
from tasks.streams.queue_stats import ConsumerQueueStats, consumer_queue_stats
from tasks.streams.stats import StreamStats, stream_stats


def _database_facts() -> dict:
    return {
        "outbox": selectors.outbox_backlog(),
        "dead_letters": selectors.dead_letter_count(),
        "waiting": selectors.waiting_by_handler(),
        "beat": beat_status(),
        "schedules": schedules_punctuality(),
    }


class PlatformCollector(Collector):
    """Queue depth and oldest age, outbox backlog, dead letters and Beat heartbeat age."""

    def collect(self) -> Iterator[Metric]:
        outcomes = call_concurrently(
            {
                "broker": queue_stats,
                "database": _database_facts,
                "workers": worker_presence,
                "streams": stream_stats,
                "stream_queues": consumer_queue_stats,
            },
            timeout=settings.HEALTH_CHECK_TIMEOUT,
        )
        up = GaugeMetricFamily(
            "platform_metrics_source_up", "1 when the source answered this scrape, else 0.", labels=["source"]
        )
        for source, outcome in outcomes.items():
            up.add_metric([source], 1.0 if outcome.ok else 0.0)
        yield up

        broker = outcomes["broker"]
        if broker.ok:
            depth = GaugeMetricFamily("platform_queue_depth", "Messages waiting in the queue.", labels=["queue"])
            age = GaugeMetricFamily(
                "platform_queue_oldest_message_age_seconds",
                "Seconds since the oldest waiting message was sent (absent when empty or unknown).",
                labels=["queue"],
            )
            for stats in broker.value:
                depth.add_metric([stats.name], stats.depth)
                if stats.oldest_age_seconds is not None:
                    age.add_metric([stats.name], stats.oldest_age_seconds)
            yield depth
            yield age
            yield from _celery_queue_metrics(broker.value)

        if outcomes["workers"].ok:
            yield from _celery_worker_metrics(outcomes["workers"].value)
        if outcomes["streams"].ok:
            yield from _stream_metrics(outcomes["streams"].value)
        if outcomes["stream_queues"].ok:
            yield from _stream_queue_metrics(outcomes["stream_queues"].value)

        database = outcomes["database"]
        if database.ok:
            facts = database.value
            unsent = facts["outbox"].unsent
            yield GaugeMetricFamily("platform_outbox_unsent_messages", "Outbox rows not sent yet.", value=unsent)
            oldest = facts["outbox"].oldest_age_seconds
            yield GaugeMetricFamily(
                "platform_outbox_oldest_unsent_age_seconds",
                "Age of the oldest unsent outbox row (0 when none).",
                value=oldest or 0.0,
            )
            yield GaugeMetricFamily(
                "platform_dead_letters", "Dead letters waiting for an operator.", value=facts["dead_letters"]
            )
            waiting = GaugeMetricFamily(
                "platform_deliveries_waiting",
                "Deliveries waiting in the database for their rate or concurrency limit.",
                labels=["handler"],
            )
            for handler, count in sorted(facts["waiting"].items()):
                waiting.add_metric([handler], count)
            yield waiting
            beat = facts["beat"]
            if beat is not None and beat.age_seconds is not None:
                yield GaugeMetricFamily(
                    "platform_beat_heartbeat_age_seconds", "Seconds since Beat's last tick.", value=beat.age_seconds
                )
            yield from _schedule_metrics(facts["schedules"])


def _schedule_metrics(schedules: list[Punctuality]) -> Iterator[Metric]:
    runs = GaugeMetricFamily(
        "platform_schedule_runs",
        "Runs each enabled schedule implied in the punctuality window, by outcome (on_time, late, missed).",
        labels=["schedule", "outcome"],
    )
    for item in schedules:
        for outcome, count in (("on_time", item.on_time), ("late", item.late), ("missed", item.missed)):
            runs.add_metric([item.name, outcome], count)
    yield runs


def _celery_queue_metrics(queues: list[QueueStats]) -> Iterator[Metric]:
    length = GaugeMetricFamily("celery_queue_length", "The number of message in broker queue.", labels=["queue_name"])
    consumers = GaugeMetricFamily(
        "celery_active_consumer_count", "The number of active consumer in broker queue.", labels=["queue_name"]
    )
    for stats in queues:
        length.add_metric([stats.name], stats.depth)
        if stats.consumers is not None:  # RabbitMQ only, as with celery-exporter
            consumers.add_metric([stats.name], stats.consumers)
    yield length
    yield consumers


def _celery_worker_metrics(presence: WorkerPresence) -> Iterator[Metric]:
    up = GaugeMetricFamily(
        "celery_worker_up", "Indicates if a worker has recently sent a heartbeat.", labels=["hostname"]
    )
    for host, value in presence.up.items():
        up.add_metric([host], value)
    yield up
    workers = GaugeMetricFamily(
        "celery_active_worker_count", "The number of active workers in broker queue.", labels=["queue_name"]
    )
    processes = GaugeMetricFamily(
        "celery_active_process_count", "The number of active processes in broker queue.", labels=["queue_name"]
    )
    # The platform's queues always, at 0 when nobody consumes them: that is what an alert looks for.
    for queue in sorted({*QUEUES, *presence.workers_per_queue, *presence.processes_per_queue}):
        workers.add_metric([queue], presence.workers_per_queue.get(queue, 0))
        processes.add_metric([queue], presence.processes_per_queue.get(queue, 0))
    yield workers
    yield processes


def _stream_metrics(streams: list[StreamStats]) -> Iterator[Metric]:
    length = GaugeMetricFamily("platform_stream_length", "Entries in the stream.", labels=["stream"])
    per_group = ["stream", "group"]
    families = {
        "pending": GaugeMetricFamily(
            "platform_stream_group_pending",
            "Entries delivered to the group, not acknowledged.",
            labels=per_group,
        ),
        "lag": GaugeMetricFamily(
            "platform_stream_group_lag", "Entries not yet delivered to the group.", labels=per_group
        ),
        "oldest_pending_seconds": GaugeMetricFamily(
            "platform_stream_group_oldest_pending_seconds",
            "Seconds since the oldest pending entry was last delivered.",
            labels=per_group,
        ),
        "dead_letters": GaugeMetricFamily(
            "platform_stream_group_dead_letters",
            "Entries in the group's dead-letter stream.",
            labels=per_group,
        ),
        "seconds_without_progress": GaugeMetricFamily(
            "platform_stream_group_seconds_without_progress",
            "Seconds since the group last acknowledged an entry (or read one).",
            labels=per_group,
        ),
    }
    for stream in streams:
        length.add_metric([stream.name], stream.length)
        for group in stream.groups:
            for attribute, family in families.items():
                value = getattr(group, attribute)
                if value is not None:
                    family.add_metric([stream.name, group.name], value)
    yield length
    yield from families.values()


def _stream_queue_metrics(queues: list[ConsumerQueueStats]) -> Iterator[Metric]:
    """The watched RabbitMQ consumer queues (``STREAMS_RABBITMQ_WATCHED_QUEUES``)."""
    families = {
        "messages": GaugeMetricFamily(
            "platform_stream_queue_messages", "Messages waiting in the consumer queue.", labels=["queue"]
        ),
        "consumers": GaugeMetricFamily(
            "platform_stream_queue_consumers", "Consumers attached to the consumer queue.", labels=["queue"]
        ),
        "dead_letters": GaugeMetricFamily(
            "platform_stream_queue_dead_letters", "Messages in the consumer queue's DLQ.", labels=["queue"]
        ),
    }
    for queue in queues:
        for attribute, family in families.items():
            family.add_metric([queue.name], getattr(queue, attribute))
    yield from families.values()
