"""Dead letters (``tasks.reliability.dead_letters``): a task that failed for good is kept whole,
a delivery that dies again updates its one dead letter, and an operator's requeue sends it
again (a delivery with its message id, an unreadable outbox row back to the relay, any other
task by name), or discards it (DESIGN.md section 5).

What a requeue sends is read back from the tests' Redis, as a worker would receive it.
"""

import contextlib
import io
import threading
import uuid
from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from kombu.exceptions import OperationalError

from config.celery_app import app as celery_app
from tasks.bus import NullBroker, override_message_broker
from tasks.messages import Message
from tasks.messaging.deliveries import DispatchError
from tasks.messaging.relay import outbox_relay_once
from tasks.models import DeadLetter, Delivery, Outbox
from tasks.reliability import dead_letters as dead_letters_module
from tasks.reliability.dead_letters import (
    FailedDelivery,
    Requeued,
    dead_letter_record,
    dead_letter_requeue,
    dead_letters_discard,
    dead_letters_requeue,
)
from tasks.reliability.deliver import DONE, DUPLICATE, deliver, delivery_run
from tests.support.broker import broker_down
from tests.support.deliveries import recorded_delivery
from tests.support.queues import queued_messages
from tests.support.subscribed import subscribed_async

MODULE = __name__
GRACE = timedelta(seconds=5)
PLAIN_TASK = "tests.dead_letters.plain"

pytestmark = pytest.mark.django_db(transaction=True)


@dataclass(frozen=True)
class WorkRequested(Message):
    work_id: int


runs: list[uuid.UUID] = []


def do_work(message):
    runs.append(message.message_id)


def do_other_work(message):
    runs.append(message.message_id)


@pytest.fixture(autouse=True)
def clean_runs():
    runs.clear()
    yield
    runs.clear()


@pytest.fixture(autouse=True)
def subscribed():
    """do_work and do_other_work subscribed as ready() would: the deliver task finds them there."""
    with subscribed_async(WorkRequested, [do_work, do_other_work], queue_name="low"):
        yield


@pytest.fixture
def null_broker():
    with override_message_broker(NullBroker()) as broker:
        yield broker


def handler_path(func) -> str:
    return f"{MODULE}.{func.__name__}"


def failed_delivery(message: Message, handler=do_work) -> FailedDelivery:
    """What ``DeliverTask.failed_delivery`` says about a failed run for this message."""
    return FailedDelivery(
        message_id=str(message.message_id),
        handler=handler_path(handler),
        message_type=message.message_name,
        payload=message.to_json(),
    )


def delivery_row(message: Message, *, handler=do_work, status=Delivery.Status.RUNNING, queue="low") -> Delivery:
    return recorded_delivery(
        message,
        handler=handler_path(handler),
        queue=queue,
        sent_ago=timedelta(minutes=5),
        status=status,
        unfinished_starts=2,
        attempts=3,
    )


def record(*, exc=None, attempts=1, task_id="task-1", queue="low", delivery=None, **fields) -> DeadLetter:
    """``dead_letter_record`` as ``PlatformTask.on_failure`` calls it."""
    arguments = {
        "task_name": "tasks.deliver" if delivery else PLAIN_TASK,
        "task_id": task_id,
        "queue": queue,
        "args": [delivery.payload, delivery.handler] if delivery else [1, "two"],
        "kwargs": {} if delivery else {"three": 3},
        "exc": exc or RuntimeError("it broke"),
        "traceback": "Traceback (most recent call last): ...",
        "attempts": attempts,
        "reason": "failed",
        "delivery": delivery,
        **fields,
    }
    return dead_letter_record(**arguments)


def dead_delivery(message: Message, *, handler=do_work, queue="low") -> DeadLetter:
    """A delivery that failed for good on ``queue``: its row dead, its dead letter recorded."""
    delivery_row(message, handler=handler, queue=queue)
    return record(delivery=failed_delivery(message, handler=handler), queue=queue)


# --- dead_letter_record ----------------------------------------------------------------------------


def test_a_plain_task_is_kept_whole_when_it_fails_for_good():
    dead = record(exc=ValueError("no such day"), attempts=3, queue="high")

    dead.refresh_from_db()
    assert (dead.task_name, dead.task_id, dead.queue) == (PLAIN_TASK, "task-1", "high")
    assert (dead.args, dead.kwargs) == ([1, "two"], {"three": 3})
    assert (dead.exception_type, dead.exception_message) == ("builtins.ValueError", "no such day")
    assert dead.traceback.startswith("Traceback")
    assert (dead.attempts, dead.reason, dead.status) == (3, "failed", DeadLetter.Status.DEAD)
    assert dead.first_failed_at == dead.last_failed_at
    assert (dead.message_id, dead.handler, dead.message_type, dead.payload) == (None, "", "", None)


def test_each_failure_of_a_plain_task_is_its_own_dead_letter_when_it_fails_twice():
    first = record(task_id="run-1")
    second = record(task_id="run-2")
    assert first.pk != second.pk
    assert sorted(DeadLetter.objects.values_list("task_id", flat=True)) == ["run-1", "run-2"]


def test_the_delivery_becomes_dead_when_its_task_fails_for_good():
    message = WorkRequested(work_id=1)
    row = delivery_row(message)

    dead = record(delivery=failed_delivery(message), attempts=4)

    row.refresh_from_db()
    assert row.status == Delivery.Status.DEAD
    dead.refresh_from_db()
    assert (dead.message_id, dead.handler) == (message.message_id, handler_path(do_work))
    assert (dead.message_type, dead.payload) == (message.message_name, message.to_json())
    assert (dead.task_name, dead.args, dead.attempts) == ("tasks.deliver", [message.to_json(), row.handler], 4)


def test_a_second_failure_updates_the_same_dead_letter_when_the_delivery_dies_again():
    message = WorkRequested(work_id=2)
    delivery_row(message)
    first = record(delivery=failed_delivery(message), attempts=2, task_id="run-1", exc=RuntimeError("first"))
    an_hour_ago = timezone.now() - timedelta(hours=1)
    DeadLetter.objects.filter(pk=first.pk).update(
        first_failed_at=an_hour_ago, last_failed_at=an_hour_ago, status=DeadLetter.Status.REQUEUED
    )

    second = record(delivery=failed_delivery(message), attempts=3, task_id="run-2", exc=KeyError("second"))

    assert second.pk == first.pk
    dead = DeadLetter.objects.get()
    assert dead.attempts == 2 + 3
    assert dead.first_failed_at == an_hour_ago  # kept from the first failure
    assert dead.last_failed_at > an_hour_ago
    assert (dead.task_id, dead.exception_type, dead.status) == ("run-2", "builtins.KeyError", DeadLetter.Status.DEAD)
    assert Delivery.objects.get().status == Delivery.Status.DEAD


def test_one_message_has_one_dead_letter_per_handler_when_two_of_its_deliveries_die():
    message = WorkRequested(work_id=3)
    dead_delivery(message, handler=do_work)
    dead_delivery(message, handler=do_other_work)
    assert sorted(DeadLetter.objects.values_list("handler", flat=True)) == [
        handler_path(do_other_work),
        handler_path(do_work),
    ]


# --- dead_letter_requeue ---------------------------------------------------------------------------


def test_a_dead_delivery_is_pending_again_and_on_its_queue_when_requeued(redis_client):
    message = WorkRequested(work_id=4)
    dead = dead_delivery(message, queue="low")
    before = timezone.now()

    dead_letter_requeue(dead_letter=dead)

    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.send_count, delivery.unfinished_starts) == (Delivery.Status.PENDING, 2, 0)
    assert delivery.sent_at >= before
    (sent,) = queued_messages(redis_client, "low")
    assert (sent["task"], sent["id"]) == ("tasks.deliver", delivery.task_id)
    assert sent["args"] == [message.to_json(), handler_path(do_work)]
    dead.refresh_from_db()
    assert (dead.status, dead.requeue_count) == (DeadLetter.Status.REQUEUED, 1)
    assert dead.requeued_at >= before
    # What a worker then does with it: the handler runs, once.
    assert delivery_run(payload=sent["args"][0], handler=sent["args"][1]) == DONE
    assert runs == [message.message_id]


def test_the_delivery_row_is_recreated_when_requeueing_a_dead_letter_whose_row_is_gone(redis_client):
    message = WorkRequested(work_id=5)
    dead = dead_delivery(message, queue="high")
    Delivery.objects.all().delete()

    dead_letter_requeue(dead_letter=dead)

    delivery = Delivery.objects.get()
    assert (delivery.message_id, delivery.handler, delivery.queue) == (message.message_id, dead.handler, "high")
    assert (delivery.status, delivery.payload, delivery.task_id) == (
        Delivery.Status.PENDING,
        message.to_json(),
        dead.task_id,
    )
    assert [sent["id"] for sent in queued_messages(redis_client, "high")] == [dead.task_id]


def test_a_plain_task_is_sent_again_by_name_on_its_queue_when_requeued(redis_client):
    dead = record(queue="high")

    dead_letter_requeue(dead_letter=dead)

    (sent,) = queued_messages(redis_client, "high")
    assert (sent["task"], sent["args"], sent["kwargs"]) == (PLAIN_TASK, [1, "two"], {"three": 3})
    assert not Delivery.objects.exists()
    dead.refresh_from_db()
    assert dead.status == DeadLetter.Status.REQUEUED


def test_a_plain_task_goes_to_the_default_queue_when_requeued_without_a_queue(redis_client):
    dead_letter_requeue(dead_letter=record(queue=""))
    assert [sent["task"] for sent in queued_messages(redis_client, "default")] == [PLAIN_TASK]


# Moved from tests/tasks/messaging/test_relay.py.
def test_requeueing_an_unreadable_row_gives_it_back_to_the_relay(null_broker):
    unreadable = Outbox.objects.create(
        message_id=uuid.uuid4(), message_type="no.such.Type", payload={"type": "no.such.Type", "data": {}}
    )
    Outbox.objects.filter(pk=unreadable.pk).update(created_at=timezone.now() - timedelta(minutes=2))
    outbox_relay_once(grace=GRACE)
    dead_letter_requeue(dead_letter=DeadLetter.objects.get(message_id=unreadable.message_id))
    unreadable.refresh_from_db()
    assert unreadable.sent_at is None


def test_an_unreadable_row_is_sent_by_the_relay_not_the_requeue_when_requeued(null_broker, redis_client):
    unreadable = Outbox.objects.create(
        message_id=uuid.uuid4(), message_type="no.such.Type", payload={"type": "no.such.Type", "data": {}}
    )
    Outbox.objects.filter(pk=unreadable.pk).update(created_at=timezone.now() - timedelta(minutes=2))
    outbox_relay_once(grace=GRACE)
    dead = DeadLetter.objects.get(message_id=unreadable.message_id)

    dead_letter_requeue(dead_letter=dead)

    unreadable.refresh_from_db()
    assert unreadable.last_error == ""
    assert not Delivery.objects.exists()
    assert all(redis_client.llen(queue) == 0 for queue in ("high", "default", "low"))
    dead.refresh_from_db()
    assert dead.status == DeadLetter.Status.REQUEUED


def test_a_dead_letter_stays_dead_and_dispatch_error_is_raised_when_the_broker_is_down(redis_client):
    message = WorkRequested(work_id=6)
    dead = dead_delivery(message)

    with broker_down(), pytest.raises(DispatchError):
        dead_letter_requeue(dead_letter=dead)

    dead.refresh_from_db()
    assert dead.status == DeadLetter.Status.DEAD
    assert redis_client.llen("low") == 0
    # Its row was made pending before the broker was asked: the sweeper sends it once it is back.
    assert Delivery.objects.get().status == Delivery.Status.PENDING

    dead_letter_requeue(dead_letter=dead)  # the broker is back: the operator's retry works
    assert redis_client.llen("low") == 1


def test_a_plain_task_stays_dead_and_dispatch_error_is_raised_when_sending_it_fails(redis_client, monkeypatch):
    dead = record()

    def refuse(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(celery_app, "send_task", refuse)
    with pytest.raises(DispatchError, match="connection refused") as raised:
        dead_letter_requeue(dead_letter=dead)

    assert isinstance(raised.value.__cause__, OperationalError)
    dead.refresh_from_db()
    assert dead.status == DeadLetter.Status.DEAD


def test_a_delivery_that_finished_meanwhile_is_not_run_again_when_its_dead_letter_is_requeued(redis_client):
    message = WorkRequested(work_id=7)
    dead = dead_delivery(message)
    with broker_down(), pytest.raises(DispatchError):
        dead_letter_requeue(dead_letter=dead)
    # The sweeper re-sends the pending row once the broker is back, and a worker runs it.
    assert delivery_run(payload=message.to_json(), handler=handler_path(do_work)) == DONE
    dead.refresh_from_db()
    assert dead.status == DeadLetter.Status.DEAD  # so the operator requeues it again

    dead_letter_requeue(dead_letter=dead)

    assert Delivery.objects.get().status == Delivery.Status.DONE
    assert delivery_run(payload=message.to_json(), handler=handler_path(do_work)) == DUPLICATE
    assert runs == [message.message_id]


# --- dead_letters_requeue and dead_letters_discard (the admin's and the command's actions) ---------


def test_only_dead_letters_still_dead_are_requeued_when_a_selection_is_requeued(redis_client):
    still_dead = dead_delivery(WorkRequested(work_id=8))
    requeued = dead_delivery(WorkRequested(work_id=9))
    discarded = dead_delivery(WorkRequested(work_id=10))
    DeadLetter.objects.filter(pk=requeued.pk).update(status=DeadLetter.Status.REQUEUED, requeue_count=1)
    DeadLetter.objects.filter(pk=discarded.pk).update(status=DeadLetter.Status.DISCARDED)

    assert dead_letters_requeue(dead_letters=DeadLetter.objects.all()) == 1

    assert [sent["args"][0]["data"]["work_id"] for sent in queued_messages(redis_client, "low")] == [8]
    statuses = {dead.pk: (dead.status, dead.requeue_count) for dead in DeadLetter.objects.all()}
    assert statuses == {
        still_dead.pk: (DeadLetter.Status.REQUEUED, 1),
        requeued.pk: (DeadLetter.Status.REQUEUED, 1),
        discarded.pk: (DeadLetter.Status.DISCARDED, 0),
    }
    assert set(Delivery.objects.values_list("status", flat=True)) == {Delivery.Status.PENDING, Delivery.Status.DEAD}


def test_requeueing_a_selection_raises_dispatch_error_when_the_broker_is_down(redis_client):
    dead_delivery(WorkRequested(work_id=11))
    with broker_down(), pytest.raises(DispatchError):
        dead_letters_requeue(dead_letters=DeadLetter.objects.all())
    assert DeadLetter.objects.get().status == DeadLetter.Status.DEAD


def test_discarded_dead_letters_are_kept_and_never_sent_when_a_selection_is_discarded(redis_client):
    dead = record(task_id="dead")
    requeued = record(task_id="requeued")
    already = record(task_id="already")
    untouched = record(task_id="untouched")
    DeadLetter.objects.filter(pk=requeued.pk).update(status=DeadLetter.Status.REQUEUED)
    DeadLetter.objects.filter(pk=already.pk).update(status=DeadLetter.Status.DISCARDED)

    chosen = DeadLetter.objects.filter(pk__in=[dead.pk, requeued.pk, already.pk])
    assert dead_letters_discard(dead_letters=chosen) == 2

    statuses = dict(DeadLetter.objects.values_list("task_id", "status"))
    assert statuses == {
        "dead": DeadLetter.Status.DISCARDED,
        "requeued": DeadLetter.Status.DISCARDED,
        "already": DeadLetter.Status.DISCARDED,
        "untouched": DeadLetter.Status.DEAD,
    }
    assert dead_letters_requeue(dead_letters=chosen) == 0
    assert all(redis_client.llen(queue) == 0 for queue in ("high", "default", "low"))
    assert untouched.pk in DeadLetter.objects.values_list("pk", flat=True)


# --- the deliver task names the delivery it was (DeliverTask.failed_delivery) ----------------------


def test_a_failed_deliver_run_names_its_delivery_when_given_the_deliver_tasks_arguments():
    message = WorkRequested(work_id=12)
    assert deliver.failed_delivery((message.to_json(), handler_path(do_work)), {}) == failed_delivery(message)


def test_a_failed_deliver_run_names_its_delivery_when_given_keyword_arguments():
    message = WorkRequested(work_id=13)
    payload, handler = message.to_json(), handler_path(do_work)
    assert deliver.failed_delivery((), {"payload": payload, "handler": handler}) == failed_delivery(message)
    assert deliver.failed_delivery((payload,), {"handler": handler}) == failed_delivery(message)


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((), {}),
        (("not a payload", f"{MODULE}.do_work"), {}),
        (({"type": "x.Y", "data": {}}, f"{MODULE}.do_work"), {}),
        (({"type": "x.Y", "data": {"message_id": str(uuid.uuid4())}}, 42), {}),
        (({"type": "x.Y"},), {"handler": f"{MODULE}.do_work"}),
    ],
    ids=["nothing", "payload not a dict", "no message id", "handler not a string", "no data"],
)
def test_a_failed_deliver_run_is_a_plain_dead_letter_when_its_arguments_are_not_a_delivery(args, kwargs):
    assert deliver.failed_delivery(args, kwargs) is None


def test_a_failed_deliver_run_is_a_plain_dead_letter_when_its_arguments_are_not_a_delivery_in_the_database():
    result = deliver.apply(args=("not a payload", f"{MODULE}.do_work"))
    assert result.failed()
    dead = DeadLetter.objects.get()
    assert (dead.task_id, dead.message_id, dead.handler) == (result.id, None, "")
    assert dead.args == ["not a payload", f"{MODULE}.do_work"]


def test_a_failed_deliver_run_is_still_dead_lettered_when_its_message_id_is_not_a_uuid():
    payload = {"type": f"{MODULE}.WorkRequested", "data": {"work_id": 14, "message_id": "not-a-uuid"}}
    result = deliver.apply(args=(payload, handler_path(do_work)))
    assert result.failed()
    assert DeadLetter.objects.filter(task_id=result.id).exists()


# --- done is terminal; requeue and discard lock what they act on (issue 14 item 1) -----------------


def test_a_done_delivery_stays_done_when_a_stale_copy_of_it_is_dead_lettered():
    message = WorkRequested(work_id=20)
    delivery_row(message, status=Delivery.Status.DONE)
    dead = record(delivery=failed_delivery(message))
    assert dead.status == DeadLetter.Status.DEAD  # the copy's failure is kept for the record
    assert Delivery.objects.get().status == Delivery.Status.DONE


def test_requeue_resolves_the_dead_letter_and_sends_nothing_when_its_delivery_is_done(redis_client):
    message = WorkRequested(work_id=21)
    delivery_row(message, status=Delivery.Status.DONE)
    dead = record(delivery=failed_delivery(message))

    assert dead_letter_requeue(dead_letter=dead) == Requeued.RESOLVED

    dead.refresh_from_db()
    assert (dead.status, dead.requeue_count) == (DeadLetter.Status.RESOLVED, 0)
    assert queued_messages(redis_client, "low") == []
    assert Delivery.objects.get().status == Delivery.Status.DONE


def test_a_stale_dead_letter_object_is_not_sent_again_when_it_was_requeued_meanwhile(redis_client):
    dead = dead_delivery(WorkRequested(work_id=22))
    stale = DeadLetter.objects.get(pk=dead.pk)  # an admin page loaded before the other requeue
    assert dead_letter_requeue(dead_letter=dead) == Requeued.SENT
    assert dead_letter_requeue(dead_letter=stale) == Requeued.SKIPPED
    assert len(queued_messages(redis_client, "low")) == 1


@pytest.mark.skipif(connection.vendor != "postgresql", reason="two writers at once need PostgreSQL")
def test_each_dead_letter_is_sent_once_when_two_requeues_of_it_run_at_once(redis_client, monkeypatch):
    dead = dead_delivery(WorkRequested(work_id=23))
    stale_copies = [DeadLetter.objects.get(pk=dead.pk) for _ in range(2)]  # two admins, one page each
    # Each requeue that gets as far as sending waits here for the other: without the lock and
    # the re-check, both send; with them, the second finds it requeued and never gets here.
    both_sending = threading.Barrier(2, timeout=5)
    real_publish = dead_letters_module.deliveries_publish

    def publish_when_both_are_sending(rows):
        with contextlib.suppress(threading.BrokenBarrierError):
            both_sending.wait()
        real_publish(rows)

    monkeypatch.setattr(dead_letters_module, "deliveries_publish", publish_when_both_are_sending)
    outcomes = _at_once([lambda dl=dl: dead_letter_requeue(dead_letter=dl) for dl in stale_copies])

    assert sorted(outcomes) == sorted([Requeued.SENT, Requeued.SKIPPED])
    assert len(queued_messages(redis_client, "low")) == 1
    assert DeadLetter.objects.get().requeue_count == 1


@pytest.mark.skipif(connection.vendor != "postgresql", reason="two writers at once need PostgreSQL")
def test_each_dead_letter_is_sent_once_when_two_bulk_requeues_of_the_same_selection_run_at_once(redis_client):
    for work_id in range(30, 60):
        dead_delivery(WorkRequested(work_id=work_id))
    selection = DeadLetter.objects.filter(status=DeadLetter.Status.DEAD)

    sent = _at_once([lambda: dead_letters_requeue(dead_letters=selection)] * 2)

    assert sum(sent) == 30
    work_ids = [m["args"][0]["data"]["work_id"] for m in queued_messages(redis_client, "low")]
    assert sorted(work_ids) == list(range(30, 60))
    assert set(DeadLetter.objects.values_list("requeue_count", flat=True)) == {1}


def test_the_command_reports_what_it_sent_resolved_and_skipped_when_it_requeues(redis_client):
    done = WorkRequested(work_id=61)
    delivery_row(done, status=Delivery.Status.DONE)
    record(delivery=failed_delivery(done))
    dead_delivery(WorkRequested(work_id=62))
    out = io.StringIO()
    call_command("dead_letters", "requeue", "--all", stdout=out)
    assert "requeued 1, resolved 1" in out.getvalue()
    assert [m["args"][0]["data"]["work_id"] for m in queued_messages(redis_client, "low")] == [62]
    call_command("dead_letters", "requeue", "--all", stdout=out)  # again: nothing left to send
    assert len(queued_messages(redis_client, "low")) == 1


def _at_once(calls: list) -> list:
    """Run each call in its own thread (its own database connection) at the same moment."""
    results: list = [None] * len(calls)
    start = threading.Barrier(len(calls), timeout=10)

    def run(index: int) -> None:
        try:
            start.wait()
            results[index] = calls[index]()
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results
