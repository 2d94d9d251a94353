"""``PlatformTask`` (``tasks.reliability.platform_task``): which errors are retried, why a task
counts as dead, and the dead letter its final failure leaves (DESIGN.md section 5).

The hooks are called on a task of this module as a worker calls them, with the request pushed
by hand: no eager mode, no worker.
"""

import logging

import pytest
from billiard.einfo import ExceptionInfo
from celery import shared_task
from celery.app.trace import build_tracer
from celery.canvas import Signature
from celery.exceptions import Reject, Retry, SoftTimeLimitExceeded
from django.db import DatabaseError
from django.db.utils import OperationalError
from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import ConnectionError as RedisConnectionError

from config.celery_app import app
from tasks.models import DeadLetter
from tasks.reliability import platform_task
from tasks.reliability.log_context import ContextFilter
from tasks.reliability.platform_task import (
    PermanentError,
    PlatformTask,
    PoisonMessage,
    TransientError,
    failure_reason,
    retryable_exceptions,
)

JOB = "tests.platform_task.job"
PICKY_JOB = "tests.platform_task.picky_job"


@shared_task(base=PlatformTask, bind=True, name=JOB)
def job(self, *args, **kwargs):
    """Report the task id the log context carries while it runs."""
    record = logging.makeLogRecord({})
    ContextFilter().filter(record)
    return record.task_id


@shared_task(base=PlatformTask, bind=True, name=PICKY_JOB, autoretry_for=(KeyError,))
def picky_job(self):
    """A task that declares its own retryable errors."""


@pytest.fixture
def running():
    """Push a worker's request for ``job`` (id, retries, queue) for the test; popped after it."""
    pushed = []

    def push(task=job, **request):
        task.push_request(**request)
        pushed.append(task)
        return task

    yield push
    for task in reversed(pushed):
        task.pop_request()


def raised(exc: BaseException) -> ExceptionInfo:
    """The ExceptionInfo a worker hands ``on_failure``: ``exc`` with the traceback of its raise."""
    try:
        raise exc
    except BaseException:
        return ExceptionInfo()


def fail(task, exc: BaseException, *, task_id="task-1", args=(1, "two"), kwargs=None) -> None:
    task.on_failure(exc, task_id, args, {"three": 3} if kwargs is None else kwargs, raised(exc))


# --- which errors are retried ----------------------------------------------------------------------


def test_transient_errors_and_the_configured_ones_are_retryable_when_settings_name_them(settings):
    settings.TASKS_RETRY_FOR = ["redis.exceptions.ConnectionError", "django.db.utils.OperationalError"]
    assert retryable_exceptions() == (TransientError, RedisConnectionError, OperationalError)


def test_only_transient_errors_are_retryable_when_settings_name_none(settings):
    settings.TASKS_RETRY_FOR = []
    assert retryable_exceptions() == (TransientError,)


def test_a_misspelt_retryable_error_fails_loudly_when_settings_name_one(settings):
    settings.TASKS_RETRY_FOR = ["django.db.utils.NoSuchError"]
    with pytest.raises(ImportError):
        retryable_exceptions()


def test_a_platform_task_retries_the_retryable_errors_and_not_permanent_ones_when_declared_by_default():
    assert job.autoretry_for == retryable_exceptions()  # the default settings: OperationalError too
    assert issubclass(OperationalError, job.autoretry_for)
    assert not issubclass(PermanentError, job.autoretry_for)
    assert not issubclass(PoisonMessage, job.autoretry_for)
    assert (job.acks_late, job.reject_on_worker_lost, job.retry_jitter) == (True, True, True)


# --- why a task is dead -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (PoisonMessage("started 4 times"), "poison"),
        (SoftTimeLimitExceeded(), "time limit"),
        (TransientError("still down"), "retries exhausted"),
        (OperationalError("database is locked"), "retries exhausted"),
        (PermanentError("bad input"), "failed"),
        (ValueError("a bug"), "failed"),
    ],
    ids=["poison", "time limit", "transient", "configured retryable", "permanent", "any other"],
)
def test_the_failure_reason_names_the_kind_of_failure_when_a_task_fails_for_good(exc, reason):
    assert failure_reason(job, exc) == reason


def test_the_failure_reason_follows_the_tasks_own_retryable_errors_when_it_declares_them():
    assert failure_reason(picky_job, KeyError("k")) == "retries exhausted"
    assert failure_reason(picky_job, TransientError("not retried by this task")) == "failed"


# --- the dead letter of a final failure --------------------------------------------------------------


@pytest.mark.django_db
def test_a_dead_letter_keeps_the_task_whole_when_it_fails_for_good(running):
    running(id="task-1", retries=2, delivery_info={"routing_key": "low"})

    fail(job, PermanentError("cannot be done"))

    dead = DeadLetter.objects.get()
    assert (dead.task_name, dead.task_id, dead.queue) == (JOB, "task-1", "low")
    assert (dead.args, dead.kwargs) == ([1, "two"], {"three": 3})
    assert dead.attempts == 3  # the first run and two retries
    assert (dead.reason, dead.status) == ("failed", DeadLetter.Status.DEAD)
    assert dead.exception_type == "tasks.reliability.platform_task.PermanentError"
    assert dead.exception_message == "cannot be done"
    assert "Traceback" in dead.traceback and "raise exc" in dead.traceback


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (PoisonMessage("started 4 times"), "poison"),
        (SoftTimeLimitExceeded(), "time limit"),
        (TransientError("still down"), "retries exhausted"),
        (RuntimeError("a bug"), "failed"),
    ],
    ids=["poison", "time limit", "retries exhausted", "failed"],
)
def test_a_dead_letter_says_why_the_task_died_when_it_fails_for_good(running, exc, reason):
    running(id="task-1", retries=0)
    fail(job, exc)
    assert DeadLetter.objects.get().reason == reason


@pytest.mark.django_db
def test_a_dead_letter_has_no_queue_or_traceback_when_the_worker_gave_none(running):
    running(id="task-1", retries=0, delivery_info=None)
    job.on_failure(RuntimeError("x"), "task-1", (), {}, None)
    dead = DeadLetter.objects.get()
    assert (dead.queue, dead.traceback, dead.attempts) == ("", "", 1)


@pytest.mark.django_db
def test_a_plain_tasks_dead_letter_names_no_delivery_when_its_arguments_look_like_one(running):
    payload = {"type": "x.Y", "data": {"message_id": "5f0c8d0e-6a7e-4a39-9f0b-2b8f7c4d1e11"}}
    assert job.failed_delivery((payload, "some.handler"), {}) is None

    running(id="task-1", retries=0)
    fail(job, RuntimeError("x"), args=(payload, "some.handler"), kwargs={})

    dead = DeadLetter.objects.get()
    assert (dead.message_id, dead.handler, dead.message_type, dead.payload) == (None, "", "", None)
    assert dead.args == [payload, "some.handler"]


@pytest.mark.django_db
def test_the_worker_goes_on_and_the_failure_is_logged_when_recording_the_dead_letter_fails(
    running, monkeypatch, caplog
):
    def database_down(**fields):
        raise DatabaseError("connection refused")

    monkeypatch.setattr(platform_task, "dead_letter_record", database_down)
    running(id="task-1", retries=0)

    fail(job, PermanentError("cannot be done"))  # does not raise: the worker must go on

    assert not DeadLetter.objects.exists()
    errors = [r for r in caplog.records if r.name == platform_task.__name__ and r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == [
        f"task {JOB} failed for good (failed): cannot be done",
        "could not record dead letter for task task-1",
    ]
    assert errors[0].task_id == "task-1"
    assert isinstance(errors[1].exc_info[1], DatabaseError)


@pytest.mark.django_db
def test_the_worker_goes_on_when_the_task_cannot_say_which_delivery_it_was(running, monkeypatch, caplog):
    def broken(args, kwargs):
        raise KeyError("payload")

    monkeypatch.setattr(job, "failed_delivery", broken)
    running(id="task-1", retries=0)

    fail(job, PermanentError("cannot be done"))

    assert "could not record dead letter for task task-1" in [r.getMessage() for r in caplog.records]


# --- logs ---------------------------------------------------------------------------------------------


def test_the_task_id_is_on_every_log_record_when_the_task_runs(running):
    running(id="task-42")
    assert job() == "task-42"


def test_a_retry_is_logged_with_its_cause_and_task_id_when_a_task_retries(caplog):
    caplog.set_level(logging.WARNING, logger=platform_task.__name__)
    job.on_retry(TransientError("still down"), "task-7", (), {}, None)
    (record,) = [r for r in caplog.records if r.name == platform_task.__name__]
    assert record.levelno == logging.WARNING
    assert record.getMessage() == f"task {JOB} retrying after TransientError: still down"
    assert record.task_id == "task-7"


# --- a retry that cannot be published ----------------------------------------------------------------


FLAKY_JOB = "tests.platform_task.flaky_job"


@shared_task(base=PlatformTask, bind=True, name=FLAKY_JOB)
def flaky_job(self):
    raise TransientError("briefly down")


def run_in_worker(task):
    """Run ``task`` through Celery's tracer as a worker's pool process does (not eager)."""
    tracer = build_tracer(task.name, task, app=app, eager=False)
    return tracer("flaky-1", [], {}, {"id": "flaky-1", "task": task.name, "delivery_info": {}})


@pytest.mark.django_db(transaction=True)
def test_a_retry_that_cannot_be_published_gives_the_message_back_when_the_broker_refuses_it(monkeypatch):
    def broker_refuses(self, *args, **kwargs):
        raise KombuOperationalError("Error 111 connecting to the broker. Connection refused.")

    monkeypatch.setattr(Signature, "apply_async", broker_refuses)
    monkeypatch.setattr(platform_task.time, "sleep", lambda seconds: None)

    result = run_in_worker(flaky_job)

    # The tracer hands the worker a Reject; requeue=True means acks_late gives the message back
    # (Celery's own retry says requeue=False: the message would be dropped).
    rejected = result.retval.exception
    rejected = getattr(rejected, "exc", rejected)  # unwrapped as the worker does (ExceptionWithTraceback)
    assert isinstance(rejected, Reject) and rejected.requeue is True


def test_a_retry_that_cannot_be_published_is_left_to_celery_when_the_task_is_called_directly(running, monkeypatch):
    def broker_refuses(self, *args, **kwargs):
        raise KombuOperationalError("refused")

    monkeypatch.setattr(Signature, "apply_async", broker_refuses)
    running(flaky_job, id="flaky-2", called_directly=False, is_eager=True)
    with pytest.raises(Retry):
        flaky_job.retry(exc=TransientError("x"), countdown=1)  # eager: no publish, nothing to give back
