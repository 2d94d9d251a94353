"""Contract tests of ``tasks.reliability.deliver`` without a worker: idempotency per (message_id, handler),
clean failures, permanent errors, poison messages and dead letters (issue 4, DESIGN.md 5)."""

import threading
import time
from dataclasses import dataclass

import pytest
from django.contrib.auth.models import Group
from django.db import connection, connections, transaction

from config.celery_app import app
from tasks.messages import Message
from tasks.models import DeadLetter, Delivery
from tasks.reliability.deliver import DONE, DUPLICATE, UnknownToThisWorker, deliver, delivery_run
from tasks.reliability.platform_task import PermanentError, PoisonMessage, TransientError
from tests.support.deliveries import recorded_delivery
from tests.support.subscribed import subscribed_async

MODULE = __name__

pytestmark = pytest.mark.django_db(transaction=True)


@dataclass(frozen=True)
class WorkRequested(Message):
    work_id: int


STATE = {"failures_left": 0, "runs": 0}


def create_group(message):
    """A handler with a side effect in the database."""
    STATE["runs"] += 1
    Group.objects.create(name=f"work-{message.work_id}-{message.message_id}")


def fails_then_creates(message):
    STATE["runs"] += 1
    Group.objects.create(name=f"flaky-{message.work_id}-{message.message_id}")
    if STATE["failures_left"] > 0:
        STATE["failures_left"] -= 1
        raise RuntimeError("handler failed after writing")


def permanently_failing(message):
    raise PermanentError(f"work {message.work_id} cannot be done")


def transiently_failing(message):
    STATE["runs"] += 1
    raise TransientError("try again later")


@pytest.fixture(autouse=True)
def reset_state():
    STATE.update(failures_left=0, runs=0)


@pytest.fixture(autouse=True)
def subscribed():
    """The handlers of this module, subscribed as an app's ready() would: deliver finds them there."""
    with subscribed_async(WorkRequested, [create_group, fails_then_creates, permanently_failing, transiently_failing]):
        yield


def path(func) -> str:
    return f"{MODULE}.{func.__name__}"


# --- idempotency ---------------------------------------------------------------------------------


def test_the_same_message_delivered_twice_changes_the_database_once():
    message = WorkRequested(work_id=1)
    payload = message.to_json()
    assert delivery_run(payload=payload, handler=path(create_group)) == DONE
    assert delivery_run(payload=payload, handler=path(create_group)) == DUPLICATE
    assert Group.objects.count() == 1
    assert STATE["runs"] == 1
    delivery = Delivery.objects.get(message_id=message.message_id, handler=path(create_group))
    assert delivery.status == Delivery.Status.DONE
    assert delivery.completed_at is not None
    assert delivery.unfinished_starts == 0


def test_a_recorded_pending_delivery_runs_once_and_is_marked_done():
    message = WorkRequested(work_id=2)
    recorded_delivery(message, handler=path(create_group))
    assert delivery_run(payload=message.to_json(), handler=path(create_group), queue="default") == DONE
    assert delivery_run(payload=message.to_json(), handler=path(create_group), queue="default") == DUPLICATE
    assert Group.objects.count() == 1
    assert Delivery.objects.get().status == Delivery.Status.DONE


def test_one_message_for_two_handlers_runs_each_handler_once():
    message = WorkRequested(work_id=3)
    assert delivery_run(payload=message.to_json(), handler=path(create_group)) == DONE
    assert delivery_run(payload=message.to_json(), handler=path(fails_then_creates)) == DONE
    assert Group.objects.count() == 2
    assert Delivery.objects.filter(status=Delivery.Status.DONE).count() == 2


def test_two_messages_for_one_handler_are_two_deliveries():
    first, second = WorkRequested(work_id=4), WorkRequested(work_id=4)
    assert delivery_run(payload=first.to_json(), handler=path(create_group)) == DONE
    assert delivery_run(payload=second.to_json(), handler=path(create_group)) == DONE
    assert Group.objects.count() == 2


def test_a_handler_that_raises_leaves_no_done_mark_and_its_writes_roll_back():
    STATE["failures_left"] = 1
    message = WorkRequested(work_id=5)
    with pytest.raises(RuntimeError, match="handler failed after writing"):
        delivery_run(payload=message.to_json(), handler=path(fails_then_creates))
    assert not Group.objects.exists()  # rolled back with the delivery mark
    delivery = Delivery.objects.get(message_id=message.message_id)
    assert delivery.status != Delivery.Status.DONE
    assert delivery.completed_at is None
    assert delivery.unfinished_starts == 0  # a clean failure is a finish, not a dead worker

    assert delivery_run(payload=message.to_json(), handler=path(fails_then_creates)) == DONE
    assert Group.objects.count() == 1
    assert STATE["runs"] == 2
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.DONE
    assert delivery.attempts == 2


# --- permanent errors and poison -----------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        {"type": "no.such.MessageType", "data": {}},
        {"data": {"work_id": 1}},
        {"type": f"{MODULE}.WorkRequested", "data": {"unexpected_only": 1}},
        {"type": f"{MODULE}.WorkRequested", "data": {"work_id": 1, "message_id": "not-a-uuid"}},
    ],
    ids=["unknown type", "no type", "missing field", "bad uuid"],
)
def test_an_unreadable_message_raises_permanent_error_and_runs_nothing(payload):
    with pytest.raises(PermanentError):
        delivery_run(payload=payload, handler=path(create_group))
    assert STATE["runs"] == 0
    assert not Delivery.objects.exists()


@pytest.mark.parametrize(
    "handler",
    [f"{MODULE}.no_such_handler", "no_such_package.module.handler", "not-a-dotted-path"],
)
def test_an_unsubscribed_handler_raises_permanent_error(handler):
    with pytest.raises(UnknownToThisWorker, match="no async subscription"):
        delivery_run(payload=WorkRequested(work_id=1).to_json(), handler=handler)
    assert not Delivery.objects.exists()


def test_permanent_errors_are_not_retried_by_the_delivery_task():
    assert not issubclass(PermanentError, deliver.autoretry_for)
    assert not issubclass(PoisonMessage, deliver.autoretry_for)
    assert issubclass(TransientError, deliver.autoretry_for)
    assert deliver.name == "tasks.deliver"
    assert deliver.acks_late is True


def record_delivery(message, *, unfinished_starts: int, handler: str) -> Delivery:
    """A delivery a worker has started ``unfinished_starts`` times without finishing."""
    return recorded_delivery(
        message, handler=handler, status=Delivery.Status.RUNNING, unfinished_starts=unfinished_starts
    )


def test_a_delivery_whose_workers_keep_dying_raises_poison_message(settings):
    message = WorkRequested(work_id=6)
    record_delivery(message, unfinished_starts=settings.DELIVERY_MAX_UNFINISHED_STARTS, handler=path(create_group))
    with pytest.raises(PoisonMessage):
        delivery_run(payload=message.to_json(), handler=path(create_group))
    assert STATE["runs"] == 0
    assert not Group.objects.exists()
    assert issubclass(PoisonMessage, PermanentError)


def test_a_delivery_still_within_the_unfinished_start_limit_runs(settings):
    message = WorkRequested(work_id=7)
    record_delivery(message, unfinished_starts=settings.DELIVERY_MAX_UNFINISHED_STARTS - 1, handler=path(create_group))
    assert delivery_run(payload=message.to_json(), handler=path(create_group)) == DONE
    assert Group.objects.count() == 1
    assert Delivery.objects.get().unfinished_starts == 0


def test_a_dead_lettered_delivery_is_not_run_again():
    message = WorkRequested(work_id=8)
    row = record_delivery(message, unfinished_starts=0, handler=path(create_group))
    Delivery.objects.filter(pk=row.pk).update(status=Delivery.Status.DEAD)
    assert delivery_run(payload=message.to_json(), handler=path(create_group)) == DUPLICATE
    assert STATE["runs"] == 0


# --- the Celery task, in process ------------------------------------------------------------------


def test_deliver_task_runs_the_handler_in_process():
    message = WorkRequested(work_id=9)
    result = deliver.apply(args=(message.to_json(), path(create_group)))
    assert result.successful()
    assert result.get() == DONE
    assert deliver.apply(args=(message.to_json(), path(create_group))).get() == DUPLICATE
    assert Group.objects.count() == 1


def test_deliver_task_with_a_permanently_failing_handler_creates_a_dead_letter():
    message = WorkRequested(work_id=10)
    payload = message.to_json()
    result = deliver.apply(args=(payload, path(permanently_failing)))
    assert result.failed()
    assert isinstance(result.result, PermanentError)

    dead = DeadLetter.objects.get()
    assert dead.task_name == "tasks.deliver"
    assert dead.task_id == result.id
    assert dead.exception_type == "tasks.reliability.platform_task.PermanentError"
    assert dead.exception_message == "work 10 cannot be done"
    assert "Traceback" in dead.traceback
    assert "permanently_failing" in dead.traceback
    assert dead.payload == payload
    assert dead.handler == path(permanently_failing)
    assert dead.message_id == message.message_id
    assert dead.message_type == WorkRequested.message_name
    assert dead.status == DeadLetter.Status.DEAD
    assert dead.attempts == 1
    assert Delivery.objects.get(message_id=message.message_id).status == Delivery.Status.DEAD


def test_deliver_task_with_an_unknown_handler_no_process_recorded_is_refused_at_once():
    payload = WorkRequested(work_id=11).to_json()
    result = deliver.apply(args=(payload, f"{MODULE}.vanished_handler"))
    assert result.failed()
    dead = DeadLetter.objects.get()
    assert dead.exception_type == "tasks.reliability.deliver.RefusedDelivery"
    assert dead.reason == "refused"
    assert dead.attempts == 1
    assert dead.handler == f"{MODULE}.vanished_handler"


def test_deliver_task_dead_letters_a_poison_message_with_its_reason(settings):
    message = WorkRequested(work_id=12)
    record_delivery(message, unfinished_starts=settings.DELIVERY_MAX_UNFINISHED_STARTS, handler=path(create_group))
    result = deliver.apply(args=(message.to_json(), path(create_group)))
    assert result.failed()
    dead = DeadLetter.objects.get()
    assert dead.reason == "poison"
    assert dead.exception_type == "tasks.reliability.platform_task.PoisonMessage"
    assert STATE["runs"] == 0


def test_deliver_task_retries_a_transient_error_then_dead_letters_it():
    message = WorkRequested(work_id=13)
    result = deliver.apply(args=(message.to_json(), path(transiently_failing)))
    assert result.failed()
    assert STATE["runs"] == deliver.max_retries + 1
    dead = DeadLetter.objects.get()
    assert dead.reason == "retries exhausted"
    assert dead.exception_type == "tasks.reliability.platform_task.TransientError"
    assert dead.attempts == deliver.max_retries + 1
    assert Delivery.objects.get().status == Delivery.Status.DEAD


@pytest.mark.skipif(connection.vendor != "postgresql", reason="on SQLite the start waits for the write lock")
def test_a_delivery_recorded_while_the_worker_starts_still_runs():
    message = WorkRequested(work_id=14)
    recorded = threading.Event()

    def record_then_commit_once_the_worker_waits():
        try:
            with transaction.atomic():
                recorded_delivery(message, handler=path(create_group))
                recorded.set()
                watcher = connections.create_connection("default")
                try:
                    with watcher.cursor() as cursor:
                        for _ in range(2000):  # until the worker waits on our row, at most ~10 s
                            cursor.execute(
                                "SELECT COUNT(*) FROM pg_stat_activity "
                                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                            )
                            if cursor.fetchone()[0]:
                                break
                            time.sleep(0.005)
                finally:
                    watcher.close()
        finally:
            connection.close()

    recorder = threading.Thread(target=record_then_commit_once_the_worker_waits)
    recorder.start()
    try:
        assert recorded.wait(10)
        result = delivery_run(payload=message.to_json(), handler=path(create_group), queue="default")
    finally:
        recorder.join(20)
    assert result == DONE
    assert Group.objects.count() == 1
    assert Delivery.objects.get().status == Delivery.Status.DONE


def group_insert(name: str) -> tuple[str, list]:
    return (f"INSERT INTO {Group._meta.db_table} (name) VALUES (%s)", [name])


def test_statements_run_with_the_done_mark_commit_with_the_handler_and_a_failing_handler_undoes_them():
    ok = WorkRequested(work_id=40)
    done = delivery_run(payload=ok.to_json(), handler=path(create_group), with_done=lambda: [group_insert("result-40")])
    assert done == DONE
    assert set(Group.objects.values_list("name", flat=True)) == {f"work-40-{ok.message_id}", "result-40"}

    broken = WorkRequested(work_id=41)
    with pytest.raises(PermanentError):
        delivery_run(
            payload=broken.to_json(), handler=path(permanently_failing), with_done=lambda: [group_insert("result-41")]
        )
    assert not Group.objects.filter(name="result-41").exists()
    assert Delivery.objects.get(message_id=broken.message_id).status == Delivery.Status.PENDING


def test_statements_run_with_the_done_mark_are_rolled_back_when_the_delivery_was_done_already():
    message = WorkRequested(work_id=42)
    assert delivery_run(payload=message.to_json(), handler=path(create_group)) == DONE
    again = delivery_run(payload=message.to_json(), handler=path(create_group), with_done=lambda: [group_insert("x")])
    assert again == DUPLICATE
    assert not Group.objects.filter(name="x").exists()


def test_deliveries_leave_results_to_their_transaction_and_skip_the_started_result():

    # SUCCESS is written in the handler's transaction; Celery stores failures and retries only.
    assert (deliver.ignore_result, deliver.store_errors_even_if_ignored) == (True, True)
    assert deliver.track_started is False
    assert app.conf.task_track_started is True  # other tasks keep it: Beat's overlap policy reads it
