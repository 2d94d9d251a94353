"""The platform's state as Prometheus metrics, read at scrape time (a custom Collector).

Queue depth and age come from the broker, the rest from the database; both are read with the
same deadline as the health checks, and ``platform_metrics_source_up`` says which source
answered, so a hung broker gives a fast scrape with the queue metrics missing, not a timeout.
"""

from __future__ import annotations

from collections.abc import Iterator

from django.conf import settings
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tasks.monitoring import selectors
from tasks.monitoring.deadline import call_concurrently
from tasks.monitoring.queue_stats import queue_stats
from tasks.scheduling.lease import beat_status


def _database_facts() -> dict:
    return {
        "outbox": selectors.outbox_backlog(),
        "dead_letters": selectors.dead_letter_count(),
        "beat": beat_status(),
    }


class PlatformCollector(Collector):
    """Queue depth and oldest age, outbox backlog, dead letters and Beat heartbeat age."""

    def collect(self) -> Iterator[Metric]:
        outcomes = call_concurrently(
            {"broker": queue_stats, "database": _database_facts}, timeout=settings.HEALTH_CHECK_TIMEOUT
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
            beat = facts["beat"]
            if beat is not None and beat.age_seconds is not None:
                yield GaugeMetricFamily(
                    "platform_beat_heartbeat_age_seconds", "Seconds since Beat's last tick.", value=beat.age_seconds
                )
