"""The jobs view's filters and search: what the Deliveries admin offers, built to answer on a
million rows.

Nothing here asks the table for its distinct values (Django's default list filters run
``SELECT DISTINCT`` over the whole table): queues and handlers come from the code, time ranges
are fixed windows. Every filter has an index (``delivery_status_idx``, ``delivery_handler_idx``,
a BRIN index on ``created_at``), and search goes by index too: a number is a delivery id, a UUID
a message or task id, anything else the words of the arguments (a full-text index on the
payload's values, PostgreSQL; a plain substring search on SQLite, the development database).
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from celery import current_app, states
from django.contrib import admin
from django.db import connection
from django.db.models import BooleanField, Q, QuerySet
from django.db.models.expressions import RawSQL
from django.http import HttpRequest
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from tasks.messaging.brokers import async_subscriptions_by_handler
from tasks.models import Delivery
from tasks.queues import QUEUES

# The payload's string and number values as words: the expression of the full-text index
# ``delivery_payload_words`` (migration 0013), written the same way so the planner uses it.
PAYLOAD_WORDS = "jsonb_to_tsvector('simple'::regconfig, {column}, '[\"string\", \"numeric\"]'::jsonb)"

WINDOWS = {
    "1h": ("Last hour", timedelta(hours=1)),
    "24h": ("Last 24 hours", timedelta(days=1)),
    "7d": ("Last 7 days", timedelta(days=7)),
}
OLDER = "older"
# A filter lists this many schedules at most; any other is reached by its Runs link.
SCHEDULES_LISTED = 50


class ChoicesFromCode(admin.SimpleListFilter):
    """A filter on the field its parameter names, whose choices come from the code, plus the value
    asked for when the code does not list it (a link to an older handler or a deleted schedule):
    Django drops a filter with no choices, and the list would silently show everything."""

    def choices_from_code(self, request: HttpRequest) -> list[tuple[str, str]]:
        raise NotImplementedError

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        choices = self.choices_from_code(request)
        if self.value() and self.value() not in dict(choices):
            choices.append((self.value(), self.value()))
        return choices

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(**{self.parameter_name: self.value()}) if self.value() else queryset


class QueueFilter(admin.SimpleListFilter):
    """The platform's queues, from the code."""

    title = "queue"
    parameter_name = "queue"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [(queue, queue) for queue in QUEUES]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(queue=self.value()) if self.value() else queryset


class HandlerFilter(ChoicesFromCode):
    """The async handlers this code subscribes."""

    title = "handler"
    parameter_name = "handler"

    def choices_from_code(self, request: HttpRequest) -> list[tuple[str, str]]:
        return [
            (path, f"{path.rsplit('.', 1)[-1]} ({path.rsplit('.', 1)[0]})") for path in async_subscriptions_by_handler()
        ]


class TimeWindowFilter(admin.SimpleListFilter):
    """A recent window of ``field_name``, or older than a week: fixed choices, one indexed range."""

    field_name = "created_at"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [(key, label) for key, (label, _) in WINDOWS.items()] + [(OLDER, "Older than 7 days")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if value in WINDOWS:
            return queryset.filter(**{f"{self.field_name}__gte": timezone.now() - WINDOWS[value][1]})
        if value == OLDER:
            return queryset.filter(**{f"{self.field_name}__lt": timezone.now() - WINDOWS["7d"][1]})
        return queryset


class CreatedFilter(TimeWindowFilter):
    """When the delivery was recorded."""

    title = "created"
    parameter_name = "created"


class DoneFilter(TimeWindowFilter):
    """When the task finished."""

    title = "finished"
    parameter_name = "done"
    field_name = "date_done"


class TaskStateFilter(admin.SimpleListFilter):
    """Celery's task states, from Celery (the parameter of the stock filter: links keep working)."""

    title = "status"
    parameter_name = "status__exact"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [(state, state) for state in sorted(states.ALL_STATES)]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(status=self.value()) if self.value() else queryset


class TaskNameFilter(ChoicesFromCode):
    """The tasks this code registers with Celery (not Celery's own)."""

    title = "task"
    parameter_name = "task_name"

    def choices_from_code(self, request: HttpRequest) -> list[tuple[str, str]]:
        return [(name, name) for name in sorted(current_app.tasks) if not name.startswith("celery.")]


class ScheduleFilter(ChoicesFromCode):
    """The runs of one schedule (the schedule admin's Runs link), listed from the schedules."""

    title = "schedule"
    parameter_name = "periodic_task_name"

    def choices_from_code(self, request: HttpRequest) -> list[tuple[str, str]]:
        names = PeriodicTask.objects.order_by("name").values_list("name", flat=True)[:SCHEDULES_LISTED]
        return [(name, name) for name in names]


def deliveries_search(queryset: QuerySet[Delivery], term: str) -> QuerySet[Delivery]:
    """``queryset`` narrowed to ``term``: a delivery id, a message or task id, or words of the
    arguments (every word must appear among the payload's values)."""
    term = term.strip()
    if not term:
        return queryset
    if term.isdigit():
        return queryset.filter(pk=int(term))
    try:
        as_uuid = uuid.UUID(term)
    except ValueError:
        pass
    else:
        return queryset.filter(Q(message_id=as_uuid) | Q(task_id=str(as_uuid)))
    if connection.vendor == "postgresql":
        column = f'"{Delivery._meta.db_table}"."payload"'
        words = RawSQL(  # noqa: S611 (the term is a bound parameter; the rest is constant)
            f"{PAYLOAD_WORDS.format(column=column)} @@ plainto_tsquery('simple'::regconfig, %s)",
            [term],
            output_field=BooleanField(),
        )
        return queryset.filter(words)
    return queryset.filter(payload__icontains=term)
