"""The public fronts of ``tasks``: every name a caller may import, and the names stored outside
the code (Celery task names, the scheduler path) that must survive any move of the internals."""

import importlib

import pytest
from celery import current_app
from django.conf import settings
from django.utils.module_loading import import_string

PUBLIC_NAMES = {
    "tasks.messages": {
        "Message",
        "MessageDefinitionError",
        "UnknownMessageShape",
        "UnknownMessageType",
        "message_type_for",
        "registered_message_types",
    },
    "tasks.bus": {
        "Broker",
        "Handler",
        "MemoryBroker",
        "NullBroker",
        "Predicate",
        "Subscription",
        "SubscriptionError",
        "TestBroker",
        "get_message_broker",
        "override_message_broker",
    },
    "tasks.transaction": {"event_cancel", "register_event", "transactional"},
    "tasks.queues": {
        "DEFAULT",
        "HIGH_PRIORITY",
        "LOW_PRIORITY",
        "PRIORITY_MAX",
        "QUEUES",
        "broker_priority",
        "queue_deadline",
        "route_task",
        "validate_queue",
    },
    "tasks.jobs": {
        "JobCancelled",
        "Misfire",
        "Overlap",
        "PermanentError",
        "PlatformTask",
        "TransientError",
        "cancel_requested",
        "declare_schedule",
    },
}


@pytest.mark.parametrize("module_name", sorted(PUBLIC_NAMES))
def test_each_public_front_exports_exactly_its_documented_names(module_name):
    module = importlib.import_module(module_name)
    assert set(module.__all__) == PUBLIC_NAMES[module_name]
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{module_name}.{name}"


def test_the_task_names_stored_in_queued_messages_and_schedule_rows_still_resolve():
    current_app.loader.import_default_modules()
    registered = set(current_app.tasks)
    assert {"tasks.deliver", "tasks.ping", "tasks.noop", "tasks.prune_sent_outbox", "celery.backend_cleanup"} <= (
        registered
    )


def test_the_configured_beat_scheduler_resolves():
    module, _, name = settings.CELERY_BEAT_SCHEDULER.partition(":")
    assert import_string(f"{module}.{name}").__name__ == "PlatformScheduler"
