"""Platform tables: outbox, deliveries, dead letters, Beat heartbeat, schedule policies and history."""

from django.conf import settings
from django.db import models
from django.utils import timezone

# Unique keys of debounced deliveries start with this (see Delivery's delivery_unique_key).
DEBOUNCE_KEY_PREFIX = "debounce:"
# The name of the Beat lease row (tasks.scheduling.lease takes it; health and metrics read it).
BEAT_LEASE_NAME = "beat"


class Outbox(models.Model):
    """One event registered in a business transaction, waiting to be (or already) dispatched."""

    message_id = models.UUIDField(unique=True)
    message_type = models.CharField(max_length=200)
    payload = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    # Nullable: a process of the release before it (a rolling deploy) inserts rows without it.
    trace_context = models.JSONField(
        null=True, blank=True, default=dict, help_text="W3C trace context of the span that registered it."
    )

    class Meta:
        verbose_name = "outbox message"
        indexes = [
            models.Index(fields=["created_at"], condition=models.Q(sent_at__isnull=True), name="outbox_unsent_idx"),
            models.Index(fields=["sent_at"], name="outbox_sent_at_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.message_type} {self.message_id}"


class Batch(models.Model):
    """A set of jobs and event deliveries that finish together: when every member is done, dead
    or cancelled, its completion callback (a Django task) is enqueued once, with the counts."""

    class Status(models.TextChoices):
        OPEN = "open", "Open (members being added)"
        CLOSED = "closed", "Closed (running)"
        FINISHED = "finished", "Finished"

    name = models.CharField(max_length=200)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN, db_index=True)
    on_complete = models.CharField(max_length=255, blank=True, help_text="The Django task run when it finishes.")
    total = models.PositiveIntegerField(default=0, help_text="Members, counted when it closes.")
    done = models.PositiveIntegerField(default=0, help_text="Members done, counted when it finishes.")
    failed = models.PositiveIntegerField(default=0, help_text="Members dead or cancelled, counted when it finishes.")
    callback_result_id = models.UUIDField(null=True, blank=True, help_text="The completion task's result id.")
    created_at = models.DateTimeField(auto_now_add=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "batches"

    def __str__(self) -> str:
        return f"{self.name} #{self.pk}"


class Delivery(models.Model):
    """One message for one async handler: recorded when sent, marked done when handled.

    The (message_id, handler) pair is the idempotency key: the handler's work and the
    ``done`` mark commit together, so a redelivered message does nothing the second time.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        DEAD = "dead", "Dead-lettered"
        UNPLANNED = "unplanned", "Predicate failed; planned again by the relay"
        DELAYED = "delayed", "Delayed; released by the relay when due"
        CANCELLED = "cancelled", "Cancelled"
        WAITING = "waiting", "Waiting for its rate or concurrency limit; released by the relay"

    message_id = models.UUIDField()
    handler = models.CharField(max_length=255)
    message_type = models.CharField(max_length=200)
    payload = models.JSONField()
    queue = models.CharField(max_length=50)
    priority = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="0..9, higher first; none: the queue's order."
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    run_after = models.DateTimeField(
        null=True, blank=True, help_text="Held in the database until then; the relay sends it when due."
    )
    task_id = models.CharField(max_length=255, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    send_count = models.PositiveIntegerField(default=0)
    unfinished_starts = models.PositiveIntegerField(
        default=0, help_text="Starts since the last clean finish: each one a worker that died."
    )
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, help_text="Why the last attempt to plan or send it failed.")
    trace_context = models.JSONField(
        null=True, blank=True, default=dict, help_text="W3C trace context every send of it continues."
    )
    batch = models.ForeignKey(
        Batch, null=True, blank=True, on_delete=models.SET_NULL, related_name="members", db_index=False
    )
    unique_key = models.CharField(
        max_length=200, blank=True, default="", help_text="At most one delivery per handler and key at a time."
    )
    unique_until = models.DateTimeField(null=True, blank=True, help_text="Its key blocks others until then.")
    # Flow limits (tasks/reliability/flow_limits.py): the keys it counts against, set by the worker
    # that admitted it or made it wait.
    rate_key = models.CharField(max_length=200, blank=True, default="", help_text="Its rate limit's key.")
    concurrency_key = models.CharField(
        max_length=200, blank=True, default="", help_text="At most N running per handler and this key."
    )

    class Meta:
        verbose_name_plural = "deliveries"
        constraints = [
            models.UniqueConstraint(fields=["message_id", "handler"], name="delivery_once_per_message_and_handler"),
            # Unique jobs (tasks/messaging/unique_deliveries.py): one delivery per handler and key
            # until its unique_until (then the next request takes the key over); a debounced one
            # holds it while delayed only (released, a new request delays another).
            models.UniqueConstraint(
                fields=["handler", "unique_key"],
                condition=~models.Q(unique_key="")
                & (models.Q(status="delayed") | ~models.Q(unique_key__startswith=DEBOUNCE_KEY_PREFIX)),
                name="delivery_unique_key",
            ),
        ]
        indexes = [
            models.Index(
                fields=["sent_at"],
                condition=models.Q(status__in=["pending", "running"]),
                name="delivery_unfinished_idx",
            ),
            # Pruning walks finished rows oldest first.
            models.Index(fields=["completed_at"], condition=models.Q(status="done"), name="delivery_done_idx"),
            # The relay releases delayed rows in due order.
            models.Index(fields=["run_after"], condition=models.Q(status="delayed"), name="delivery_delayed_idx"),
            # The relay releases waiting rows per handler and key, oldest first; a worker counts the
            # running ones of its key.
            models.Index(
                fields=["handler", "concurrency_key", "rate_key", "id"],
                condition=models.Q(status__in=["waiting", "running"]),
                name="delivery_flow_limit_idx",
            ),
            # The jobs view (tasks/reliability/jobs_view.py): its filters, newest first, and a search
            # by task id. PostgreSQL also gets a BRIN index on created_at and a full-text index of
            # the payload's values (migration 0013).
            models.Index(fields=["status", "-id"], name="delivery_status_idx"),
            models.Index(fields=["handler", "-id"], name="delivery_handler_idx"),
            models.Index(fields=["queue", "-id"], name="delivery_queue_idx"),
            models.Index(fields=["task_id"], name="delivery_task_id_idx"),
            # A batch's progress: its members counted by status.
            models.Index(
                fields=["batch", "status"], condition=models.Q(batch__isnull=False), name="delivery_batch_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.handler} <- {self.message_type} {self.message_id}"


class DeadLetter(models.Model):
    """A task that failed for good: everything needed to understand it and run it again."""

    class Status(models.TextChoices):
        DEAD = "dead", "Dead"
        REQUEUED = "requeued", "Requeued"
        DISCARDED = "discarded", "Discarded"
        RESOLVED = "resolved", "Resolved: its delivery was already done"

    task_name = models.CharField(max_length=255, db_index=True)
    task_id = models.CharField(max_length=255, blank=True)
    queue = models.CharField(max_length=50, blank=True)
    args = models.JSONField(default=list, blank=True)
    kwargs = models.JSONField(default=dict, blank=True)
    message_id = models.UUIDField(null=True, blank=True, db_index=True)
    message_type = models.CharField(max_length=200, blank=True)
    handler = models.CharField(max_length=255, blank=True, db_index=True)
    payload = models.JSONField(null=True, blank=True)
    reason = models.CharField(max_length=50, blank=True, help_text="failed, retries exhausted, poison, time limit")
    exception_type = models.CharField(max_length=255, blank=True)
    exception_message = models.TextField(blank=True)
    traceback = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=1)
    first_failed_at = models.DateTimeField()
    last_failed_at = models.DateTimeField(db_index=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DEAD, db_index=True)
    requeued_at = models.DateTimeField(null=True, blank=True)
    requeue_count = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-last_failed_at"]

    def __str__(self) -> str:
        return f"{self.task_name} {self.handler} ({self.exception_type})".strip()

    @staticmethod
    def failure_fields(exc: BaseException) -> dict[str, object]:
        """The fields that describe a failure now: every dead letter is built from these."""
        now = timezone.now()
        return {
            "exception_type": f"{type(exc).__module__}.{type(exc).__qualname__}",
            "exception_message": str(exc),
            "first_failed_at": now,
            "last_failed_at": now,
        }


class BeatHeartbeat(models.Model):
    """The running Beat's leadership and liveness: one row per Beat lock name.

    Written by the active Beat every tick; read by health checks and the status page.
    """

    name = models.CharField(max_length=100, unique=True, default=BEAT_LEASE_NAME)
    leader = models.CharField(
        max_length=255, blank=True, help_text="hostname:pid:start id of the Beat holding the lock"
    )
    generation = models.PositiveBigIntegerField(
        default=0,
        help_text="Fencing token: incremented at every takeover; a run is recorded only under the current one.",
    )
    started_at = models.DateTimeField(null=True, blank=True)
    last_tick_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name}: {self.leader or 'no leader'}"


class ScheduledRun(models.Model):
    """One due run of a schedule, recorded by the active Beat before it is published.

    (schedule, due time) is unique, so no leader can record, and nothing can send, the same run
    twice; an unsent row is what a broker outage left behind, and the relay sends it later.
    """

    periodic_task_name = models.CharField(max_length=200)
    due_at = models.DateTimeField()
    task = models.CharField(max_length=255)
    args = models.JSONField(default=list, blank=True)
    kwargs = models.JSONField(default=dict, blank=True)
    options = models.JSONField(default=dict, blank=True, help_text="queue, routing, priority, headers, expires")
    task_id = models.CharField(max_length=255)
    leader = models.CharField(max_length=255, blank=True)
    leader_generation = models.PositiveBigIntegerField()
    recorded_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["periodic_task_name", "due_at"], name="scheduled_run_once_per_due_time")
        ]
        indexes = [
            models.Index(
                fields=["recorded_at"], condition=models.Q(sent_at__isnull=True), name="scheduled_run_unsent_idx"
            )
        ]

    def __str__(self) -> str:
        return f"{self.periodic_task_name} due {self.due_at:%Y-%m-%d %H:%M:%S}"


class SchedulePolicy(models.Model):
    """Misfire and overlap policy of one django-celery-beat PeriodicTask."""

    class Misfire(models.TextChoices):
        RUN_ONCE = "run_once", "Run once to catch up"
        SKIP = "skip", "Skip missed runs"

    class Overlap(models.TextChoices):
        ALLOW = "allow", "Allow overlapping runs"
        SKIP = "skip", "Skip while the previous run is running"

    periodic_task = models.OneToOneField(
        "django_celery_beat.PeriodicTask", on_delete=models.CASCADE, related_name="policy"
    )
    misfire = models.CharField(max_length=10, choices=Misfire.choices, default=Misfire.RUN_ONCE)
    overlap = models.CharField(max_length=10, choices=Overlap.choices, default=Overlap.SKIP)

    class Meta:
        verbose_name_plural = "schedule policies"

    def __str__(self) -> str:
        return f"misfire={self.misfire} overlap={self.overlap}"


class ScheduleChange(models.Model):
    """History of a schedule: every create, change and delete, by whom and what changed."""

    class Action(models.TextChoices):
        CREATED = "created", "Created"
        CHANGED = "changed", "Changed"
        DELETED = "deleted", "Deleted"

    periodic_task_id = models.IntegerField(db_index=True)
    periodic_task_name = models.CharField(max_length=200)
    action = models.CharField(max_length=10, choices=Action.choices)
    changes = models.JSONField(default=dict, blank=True, help_text="field -> [old, new]")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="schedule_changes"
    )
    source = models.CharField(max_length=50, blank=True, help_text="admin, sync_schedules, shell, ...")
    at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-at"]

    def __str__(self) -> str:
        return f"{self.periodic_task_name} {self.action} at {self.at:%Y-%m-%d %H:%M:%S}"


class StreamEntry(models.Model):
    """A committed event of a streamed class (``Message.stream``), with its place in its stream.

    The relay's sequencing step copies the event here from the outbox and gives it the next
    position of its stream; its append step hands entries to the stream's sink in position order
    and marks them appended. Tracked apart from ``Outbox.sent_at``: a stream outage never holds
    deliveries back, and a delivery outage never holds a stream back.
    """

    message_id = models.UUIDField(unique=True)
    outbox_id = models.BigIntegerField(help_text="The outbox row it was copied from (that row may be pruned).")
    stream = models.CharField(max_length=200)
    position = models.BigIntegerField(help_text="1, 2, 3, ... within the stream, in the order the relay saw commits.")
    entry_id = models.CharField(max_length=40, help_text="The id in the stream (Redis: explicit XADD id).")
    key = models.CharField(max_length=200)
    message_type = models.CharField(max_length=200)
    payload = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)
    appended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "stream entries"
        constraints = [models.UniqueConstraint(fields=["stream", "position"], name="stream_entry_position_once")]
        indexes = [
            models.Index(
                fields=["stream", "position"],
                condition=models.Q(appended_at__isnull=True),
                name="stream_unappended_idx",
            ),
            models.Index(fields=["outbox_id"], name="stream_entry_outbox_idx"),
            # Pruning walks appended rows oldest first.
            models.Index(
                fields=["appended_at"], condition=models.Q(appended_at__isnull=False), name="stream_appended_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.stream} #{self.position} {self.message_type}"


class StreamPosition(models.Model):
    """The last position and entry id given out in one stream; its row lock is the stream's:
    one relay at a time sequences into it or appends from it."""

    stream = models.CharField(max_length=200, unique=True)
    position = models.BigIntegerField(default=0)
    entry_ms = models.BigIntegerField(default=0)
    entry_seq = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.stream} at {self.position}"


class StreamCursor(models.Model):
    """How far the outbox has been read for streams: every streamed outbox row with an id up to
    ``outbox_id`` has its StreamEntry. ``candidate_id`` becomes the new ``outbox_id`` once none of
    ``candidate_writers`` (the transactions open when it was read) is open any more."""

    name = models.CharField(max_length=50, unique=True)
    outbox_id = models.BigIntegerField(default=0)
    candidate_id = models.BigIntegerField(default=0)
    candidate_writers = models.JSONField(default=list, blank=True)

    def __str__(self) -> str:
        return f"{self.name} at {self.outbox_id}"


class TaskRun(models.Model):
    """A job enqueued with Django's task API (``tasks.django_tasks``): what its ``TaskResult``
    reads beside its Delivery row, which holds the status.

    Written in the enqueuing transaction, so it exists exactly when the job does. The worker runs
    the task this row names, with these arguments: a message from the broker only says which row.
    """

    result_id = models.UUIDField(unique=True, help_text="TaskResult.id; the message id of its delivery.")
    task_path = models.CharField(max_length=255, db_index=True)
    backend = models.CharField(max_length=100)
    queue = models.CharField(max_length=50)
    priority = models.SmallIntegerField(default=0, help_text="Django's priority, -100..100.")
    args = models.JSONField(default=list, blank=True)
    kwargs = models.JSONField(default=dict, blank=True)
    run_after = models.DateTimeField(null=True, blank=True)
    enqueued_at = models.DateTimeField(db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    last_attempted_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    worker_ids = models.JSONField(default=list, blank=True, help_text="One per attempt.")
    errors = models.JSONField(default=list, blank=True, help_text="exception_class_path and traceback per failure.")
    return_value = models.JSONField(null=True, blank=True)

    class Meta:
        verbose_name = "Django task run"

    def __str__(self) -> str:
        return f"{self.task_path} {self.result_id}"


class QueuePause(models.Model):
    """A paused queue: workers stop consuming it (within a couple of seconds) until the row is
    deleted; its messages wait in the broker. Persisted, so a worker started meanwhile stays off it."""

    queue = models.CharField(max_length=50, unique=True)
    paused_at = models.DateTimeField(auto_now_add=True)
    paused_by = models.CharField(max_length=150, blank=True)
    reason = models.CharField(max_length=200, blank=True)

    def __str__(self) -> str:
        return f"{self.queue} paused"


class DeliveryCancelRequest(models.Model):
    """A cancel asked for a delivery while it ran: its handler may see it and stop (cooperative).

    A row of its own, not a column of the Delivery: a running handler's transaction holds its
    Delivery row locked until it ends, so a request written there would wait for the handler.
    """

    message_id = models.UUIDField()
    handler = models.CharField(max_length=255)
    requested_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["message_id", "handler"], name="cancel_request_once_per_delivery")
        ]

    def __str__(self) -> str:
        return f"cancel {self.handler} <- {self.message_id}"


class FlowLimit(models.Model):
    """An operator's override of the flow limits and unique window a handler declares in code
    (``subscribe_async(..., rate_limit=, concurrency=, unique_for=)``): what every process applies
    instead, within ``FLOW_LIMITS_REFRESH`` seconds."""

    handler = models.CharField(max_length=255, unique=True)
    rate_limit = models.CharField(
        max_length=50,
        blank=True,
        help_text='"10/second", "60/minute", "1000 per hour"; "none" for no limit; blank: the code\'s.',
    )
    concurrency = models.PositiveIntegerField(
        null=True, blank=True, help_text="At most this many running per key; 0 for no limit; blank: the code's."
    )
    unique_for = models.DurationField(
        null=True,
        blank=True,
        help_text="A unique job's window (HH:MM:SS), for a handler that declares unique=; blank: the code's.",
    )
    reason = models.CharField(max_length=200, blank=True)
    changed_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"limits of {self.handler}"


class FlowLimitChange(models.Model):
    """History of the flow-limit overrides: every create, change and delete, by whom and what changed."""

    class Action(models.TextChoices):
        CREATED = "created", "Created"
        CHANGED = "changed", "Changed"
        DELETED = "deleted", "Deleted"

    handler = models.CharField(max_length=255, db_index=True)
    action = models.CharField(max_length=10, choices=Action.choices)
    changes = models.JSONField(default=dict, blank=True, help_text="field -> [old, new]")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="flow_limit_changes"
    )
    source = models.CharField(max_length=50, blank=True, help_text="admin, shell, ...")
    at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-at"]

    def __str__(self) -> str:
        return f"{self.handler} {self.action} at {self.at:%Y-%m-%d %H:%M:%S}"
