"""The Celery application: ``celery -A config worker|beat|flower``.

Every reliability setting is set here, once, and named:

- ``task_acks_late`` + ``task_reject_on_worker_lost``: a message is acknowledged only after
  its task ends, and a worker that dies mid-task gives it back to the queue.
- ``worker_prefetch_multiplier = 1``: a worker holds one message per process, so a crash
  strands as little as possible and long tasks do not block short ones.
- JSON only: no pickle, so a message can never execute code on the worker.
- Soft and hard time limits on every task; the hard limit stays below the Redis
  ``visibility_timeout`` (checked in settings), so a healthy task is never redelivered to a
  second worker, while a dead worker's messages come back within that timeout.
"""

import os

from celery import Celery
from django.conf import settings
from kombu import Exchange, Queue

from tasks.messaging.redis_transport import register_redis_transport
from tasks.queues import DEFAULT, QUEUES
from tasks.reliability.paused_queues import QueuePauseStep

# redis:// and rediss:// use kombu's Redis transport with a fix that keeps a worker alive when
# Redis goes away (see tasks/messaging/redis_transport.py); amqp:// is untouched.
register_redis_transport()

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")


app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_track_started=True,
    # django-celery-results' backend, but a worker's write waits out a database outage or gives
    # the task back to the queue, never acknowledging it unrecorded (tasks/reliability/result_backend.py).
    result_backend="tasks.reliability.result_backend:PlatformResultBackend",
    task_soft_time_limit=settings.CELERY_TASK_SOFT_TIME_LIMIT,
    task_time_limit=settings.CELERY_TASK_TIME_LIMIT,
    broker_connection_retry_on_startup=True,
    broker_connection_timeout=4,
    broker_transport_options={
        "visibility_timeout": settings.CELERY_VISIBILITY_TIMEOUT,
        # Publishing must fail fast when Redis is down: the outbox keeps the event.
        "socket_connect_timeout": 3,
        # No retry_on_timeout: kombu pipelines publishes (Producer.batch) only without it,
        # and a failed publish is the outbox's to retry.
        "socket_timeout": 10,
        # Look for messages of dead workers every 5 s (kombu's default is every 100 s), so a
        # dead worker's messages come back within visibility_timeout + 5 s. A restorer that
        # dies holding the restore mutex blocks others for unacked_mutex_expire only.
        "unacked_restore_interval": 5,
        "unacked_restore_throttle": 1,
        "unacked_mutex_expire": 30,
        # Poll the queues in the order the worker consumes them (high, default, low), every
        # time: high is always taken first. kombu's default round robin shares turns.
        "queue_order_strategy": "priority",
    },
    result_backend_transport_options={"visibility_timeout": settings.CELERY_VISIBILITY_TIMEOUT},
    task_queues=[
        Queue(
            name,
            Exchange(name, type="direct", durable=True),
            routing_key=name,
            durable=True,
            # RabbitMQ orders a queue's messages by priority only if declared with x-max-priority.
            max_priority=settings.TASK_QUEUE_MAX_PRIORITY or None,
        )
        for name in QUEUES
    ],
    task_routes=("tasks.queues.route_task",),
    task_default_queue=DEFAULT,
    task_default_exchange=DEFAULT,
    task_default_routing_key=DEFAULT,
    task_default_delivery_mode="persistent",
    task_create_missing_queues=False,
    worker_cancel_long_running_tasks_on_connection_loss=True,
    # SIGTERM (remapped to a cold shutdown with REMAP_SIGTERM=SIGQUIT in the Procfile) waits this
    # long for running tasks, then hands the unfinished ones back to the queue (acks_late).
    worker_soft_shutdown_timeout=settings.WORKER_SHUTDOWN_GRACE,
    worker_send_task_events=True,
    # Django's LOGGING (with the task context filter) stays in force in workers.
    worker_hijack_root_logger=False,
    task_send_sent_event=True,
)

# Every worker stops consuming paused queues (tasks/messaging/queue_pauses.py) within seconds.
app.steps["consumer"].add(QueuePauseStep)
app.autodiscover_tasks()
