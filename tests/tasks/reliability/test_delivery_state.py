"""The delivery state machine (``tasks.reliability.delivery_state``): every transition from every
status, ``done`` terminal, and a lost race doing nothing (issue 14 item 1, DESIGN.md section 5)."""

import threading
import time
import uuid
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from tasks.models import Delivery
from tasks.reliability import delivery_state
from tasks.reliability.delivery_state import (
    TRANSITIONS,
    deliveries_cancel,
    deliveries_hold,
    deliveries_release_due,
    deliveries_release_waiting,
    deliveries_wait_again,
    delivery_claim,
    delivery_finish,
    delivery_give_back,
    delivery_kill,
    delivery_plan,
    delivery_postpone,
    delivery_release,
    delivery_requeue,
    delivery_start,
    delivery_stop,
    delivery_wait,
)

pytestmark = pytest.mark.django_db(transaction=True)

HANDLER = "tests.handlers.handle"
STATUSES = [choice for choice, _ in Delivery.Status.choices]


def row(status: str, *, starts: int = 1) -> Delivery:
    return Delivery.objects.create(
        message_id=uuid.uuid4(),
        handler=HANDLER,
        message_type="tests.Event",
        payload={"type": "tests.Event", "data": {}},
        queue="default",
        status=status,
        unfinished_starts=starts,
        sent_at=timezone.now() - timedelta(minutes=5),
        send_count=1,
    )


def run(transition: str, delivery: Delivery) -> bool:
    key = {"message_id": delivery.message_id, "handler": delivery.handler}
    later = timezone.now() + timedelta(seconds=30)
    calls = {
        "start": lambda: delivery_start(**key, message_type="tests.Event", payload={}, queue="default") is not None,
        "finish": lambda: delivery_finish(**key),
        "release": lambda: delivery_release(**key, retry_at=later),
        "give_back": lambda: delivery_give_back(**key),
        "postpone": lambda: delivery_postpone(**key, until=later),
        "kill": lambda: delivery_kill(**key),
        "plan": lambda: delivery_plan(**key, sent_at=later),
        "requeue": lambda: delivery_requeue(**key),
        "release_due": lambda: deliveries_release_due(pks=[delivery.pk]) == 1,
        "hold": lambda: deliveries_hold(pks=[delivery.pk]) == 1,
        "stop": lambda: delivery_stop(**key),
        "claim": lambda: delivery_claim(pk=delivery.pk, concurrency_key="k"),
        "wait": lambda: delivery_wait(pk=delivery.pk, run_after=None, concurrency_key="k"),
        "release_waiting": lambda: deliveries_release_waiting(pks=[delivery.pk]) == 1,
        "wait_again": lambda: deliveries_wait_again(pks=[delivery.pk]) == 1,
        # A cancel of a running delivery only records a request (its handler may stop on it).
        "cancel": lambda: (
            deliveries_cancel(deliveries=Delivery.objects.filter(pk=delivery.pk)) == 1
            and Delivery.objects.get(pk=delivery.pk).status == Delivery.Status.CANCELLED
        ),
    }
    return calls[transition]()


@pytest.mark.parametrize("status", STATUSES)
@pytest.mark.parametrize("transition", sorted(TRANSITIONS))
def test_a_transition_changes_the_status_only_from_the_states_it_allows(transition, status):
    allowed, target = TRANSITIONS[transition]
    delivery = row(status)
    won = run(transition, delivery)
    delivery.refresh_from_db()
    assert won == (status in allowed)
    assert delivery.status == (target if won else status)


@pytest.mark.parametrize("transition", sorted(TRANSITIONS))
def test_no_transition_leaves_done_when_the_delivery_is_done(transition):
    delivery = row(Delivery.Status.DONE)
    assert run(transition, delivery) is False
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.DONE


def test_an_unplanned_delivery_is_only_planned_or_killed_when_any_transition_is_tried():
    from_unplanned = {name for name, (allowed, _) in TRANSITIONS.items() if Delivery.Status.UNPLANNED in allowed}
    assert from_unplanned == {"plan", "kill"}


def test_the_start_is_counted_and_the_finish_clears_it_when_a_delivery_runs():
    delivery = row(Delivery.Status.PENDING, starts=0)
    key = {"message_id": delivery.message_id, "handler": HANDLER}
    assert delivery_start(**key, message_type="tests.Event", payload={}, queue="default") == 1
    assert delivery_start(**key, message_type="tests.Event", payload={}, queue="default") == 2
    assert delivery_finish(**key)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.unfinished_starts, delivery.attempts) == (Delivery.Status.DONE, 0, 2)
    assert delivery.completed_at is not None


def test_a_delivery_with_no_row_is_recorded_running_when_it_starts():
    message_id = uuid.uuid4()
    starts = delivery_start(message_id=message_id, handler=HANDLER, message_type="t.E", payload={}, queue="low")
    assert starts == 1
    assert Delivery.objects.get(message_id=message_id).status == Delivery.Status.RUNNING


def test_a_given_back_start_no_longer_counts_when_the_platform_interrupted_it():
    delivery = row(Delivery.Status.RUNNING, starts=2)
    assert delivery_give_back(message_id=delivery.message_id, handler=HANDLER)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.unfinished_starts) == (Delivery.Status.PENDING, 1)
    uncounted = row(Delivery.Status.RUNNING, starts=0)
    assert not delivery_give_back(message_id=uncounted.message_id, handler=HANDLER)  # never below zero


def test_a_requeue_starts_the_count_afresh_and_records_a_send_when_the_delivery_is_dead():
    delivery = row(Delivery.Status.DEAD, starts=3)
    assert delivery_requeue(message_id=delivery.message_id, handler=HANDLER)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.unfinished_starts, delivery.send_count) == (Delivery.Status.PENDING, 0, 2)
    assert delivery.sent_at > timezone.now() - timedelta(seconds=5)


def test_a_postponed_delivery_is_due_at_the_given_time_when_its_worker_cannot_run_it_yet():
    delivery = row(Delivery.Status.RUNNING)
    later = timezone.now() + timedelta(seconds=40)
    assert delivery_postpone(message_id=delivery.message_id, handler=HANDLER, until=later)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.sent_at) == (Delivery.Status.PENDING, later)


def test_every_status_write_of_the_platform_goes_through_the_state_machine():
    # The one owner: no other module of tasks/ writes Delivery.status (the relay's unplanned
    # rows are created with that status, not moved to it).
    import pathlib  # noqa: PLC0415

    root = pathlib.Path(delivery_state.__file__).resolve().parents[1]
    writers = []
    for path in root.rglob("*.py"):
        if "migrations" in path.parts or path.name == "delivery_state.py":
            continue
        writers += [
            f"{path.relative_to(root)}: {line.strip()}"
            for line in path.read_text().splitlines()
            if "Delivery.objects" in line and ".update(" in line and "status=" in line
        ]
    assert writers == []


@pytest.mark.skipif(connection.vendor != "postgresql", reason="needs row locks held across threads")
@pytest.mark.parametrize(("status", "transition"), [("dead", "requeue"), ("running", "finish"), ("running", "kill")])
def test_the_second_of_two_racing_transitions_does_nothing_when_the_first_wins(status, transition):
    delivery = row(status)
    first_holds_the_row, results = threading.Event(), {}

    def second() -> None:
        first_holds_the_row.wait(10)
        try:
            results["second"] = run(transition, delivery)  # waits on the first one's row lock
        finally:
            connection.close()

    thread = threading.Thread(target=second)
    thread.start()
    try:
        with transaction.atomic():
            results["first"] = run(transition, delivery)
            first_holds_the_row.set()
            _wait_for_a_lock_waiter()
    finally:
        thread.join(20)
    assert results == {"first": True, "second": False}
    delivery.refresh_from_db()
    assert delivery.status == TRANSITIONS[transition][1]


def _wait_for_a_lock_waiter() -> None:
    with connection.cursor() as cursor:
        for _ in range(1000):
            # Inside a transaction pg_stat_activity is a snapshot taken at its first read: without
            # clearing it, the waiter never shows and the loop ran its full 10 s every time.
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if cursor.fetchone()[0]:
                return
            time.sleep(0.01)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="needs row locks held across threads")
def test_a_release_skips_a_row_another_copy_holds_instead_of_waiting_for_it():
    delivery = row("running")
    results = {}

    def release() -> None:
        try:
            results["released"] = run("release", delivery)
        finally:
            connection.close()

    with transaction.atomic():
        # Another copy's handler transaction holds the row (on a lost host, for as long as that lasts).
        Delivery.objects.select_for_update().get(pk=delivery.pk)
        thread = threading.Thread(target=release)
        thread.start()
        thread.join(10)
        assert not thread.is_alive(), "the release waited on the lock another copy holds"
    assert results == {"released": False}
    delivery.refresh_from_db()
    assert delivery.status == "running"
