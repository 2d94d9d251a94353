"""Scheduled runs: recorded once per (schedule, due time), only under the lease's fencing token,
sent by whoever claims them first, and left for the relay when the broker is down."""

from __future__ import annotations

import contextlib
import io
import os
from datetime import timedelta

import pytest
from celery import current_app
from django.core.management import call_command
from django.db import DatabaseError
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from tasks.models import BEAT_LEASE_NAME, BeatHeartbeat, ScheduledRun
from tasks.scheduling.lease import BeatLease
from tasks.scheduling.runs import (
    RUN_HEADER,
    scheduled_run_record,
    scheduled_run_send,
    scheduled_run_unsent,
    scheduled_runs_send_unsent,
)
from tests.support.processes import free_port
from tests.support.queues import queued_messages

pytestmark = pytest.mark.django_db(transaction=True)

DUE = timezone.now().replace(microsecond=0) + timedelta(minutes=5)


@pytest.fixture
def lease() -> BeatLease:
    held = BeatLease(ttl=5)
    assert held.hold()
    return held


def record(lease: BeatLease, *, due=DUE, name: str = "nightly") -> tuple[ScheduledRun | None, bool]:
    return scheduled_run_record(
        lease=lease,
        periodic_task_name=name,
        due_at=due,
        task="tasks.ping",
        args=[],
        kwargs={},
        options={"queue": "low", "expires": DUE + timedelta(hours=1), "headers": {"periodic_task_name": name}},
    )


@contextlib.contextmanager
def broker_refusing():
    """Celery's own producer pool pointed at a port nothing listens on, then restored."""
    app = current_app._get_current_object()
    saved = app._pool, app.amqp._producer_pool, os.environ.get("CELERY_BROKER_WRITE_URL")
    os.environ["CELERY_BROKER_WRITE_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    app._pool = app.amqp._producer_pool = None
    try:
        yield
    finally:
        if app._pool is not None:
            app._pool.force_close_all()
        app._pool, app.amqp._producer_pool, saved_url = saved
        if saved_url is None:
            os.environ.pop("CELERY_BROKER_WRITE_URL", None)
        else:
            os.environ["CELERY_BROKER_WRITE_URL"] = saved_url


def test_a_due_run_is_recorded_once_whoever_records_it_again(lease):
    run, created = record(lease)
    again, created_again = record(lease)

    assert created and not created_again
    assert again.pk == run.pk
    assert ScheduledRun.objects.count() == 1
    assert (run.leader, run.leader_generation) == (lease.identity, lease.generation)


def test_a_leader_that_lost_its_lease_records_nothing_when_it_resumes(lease):
    # A standby took over while this leader was stalled: the generation moved on.
    BeatHeartbeat.objects.filter(name=BEAT_LEASE_NAME).update(last_tick_at=timezone.now() - timedelta(seconds=30))
    standby = BeatLease(ttl=5)
    assert standby.hold()
    assert standby.generation == lease.generation + 1

    assert record(lease) == (None, False)
    assert record(standby)[1] is True


def test_an_expired_lease_records_nothing_even_before_anyone_took_over(lease):
    BeatHeartbeat.objects.filter(name=BEAT_LEASE_NAME).update(last_tick_at=timezone.now() - timedelta(seconds=30))

    assert record(lease) == (None, False)
    assert not ScheduledRun.objects.exists()


def test_two_leases_of_one_host_and_pid_are_two_identities():
    first, second = BeatLease(ttl=5), BeatLease(ttl=5)

    assert first.identity != second.identity
    assert first.identity.rsplit(":", 1)[0] == second.identity.rsplit(":", 1)[0]  # host:pid
    assert first.hold() and not second.hold()


def test_a_renewal_under_an_old_generation_fails_and_the_leader_stands_down(lease):
    BeatHeartbeat.objects.filter(name=BEAT_LEASE_NAME).update(generation=lease.generation + 1)
    lease._last_renew = 0

    assert lease.hold() is False
    assert lease.leader is False


def test_a_recorded_run_is_sent_once_with_its_run_id_and_options(lease, redis_client):
    run, _ = record(lease)

    assert scheduled_run_send(run_id=run.pk) is True
    assert scheduled_run_send(run_id=run.pk) is False  # sent already: never twice

    [message] = queued_messages(redis_client, "low")
    assert message["id"] == run.task_id
    assert message["headers"][RUN_HEADER] == run.pk
    assert message["headers"]["periodic_task_name"] == "nightly"
    run.refresh_from_db()
    assert run.sent_at is not None and run.attempts == 1
    assert not scheduled_run_unsent("nightly")


def test_a_run_the_broker_refused_stays_unsent_and_the_relay_pass_sends_it_later(lease, redis_client):
    run, _ = record(lease)
    with broker_refusing():
        assert scheduled_run_send(run_id=run.pk) is False
    run.refresh_from_db()
    assert run.sent_at is None and run.attempts == 1 and run.last_error
    assert scheduled_run_unsent("nightly")

    assert scheduled_runs_send_unsent(older_than=timedelta(hours=1)) == 0  # still within the grace
    assert scheduled_runs_send_unsent(older_than=timedelta(0)) == 1
    assert [m["id"] for m in queued_messages(redis_client, "low")] == [run.task_id]
    assert scheduled_runs_send_unsent(older_than=timedelta(0)) == 0


def test_the_database_down_at_a_due_time_makes_beat_wait_and_send_nothing(make_scheduler, redis_client, monkeypatch):
    every = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(name="frequent", task="tasks.ping", interval=every, queue="low")
    scheduler = make_scheduler("host-a:1:x")
    scheduler.tick()  # takes the lease and loads the schedule

    def database_down(**kwargs):
        raise DatabaseError("server closed the connection unexpectedly")

    monkeypatch.setattr("tasks.scheduling.scheduler.scheduled_run_record", database_down)
    for _ in range(3):
        scheduler.tick()
    assert redis_client.llen("low") == 0

    monkeypatch.undo()
    deadline = timezone.now() + timedelta(seconds=10)
    while not redis_client.llen("low") and timezone.now() < deadline:
        scheduler.tick()
    assert redis_client.llen("low") >= 1
    assert ScheduledRun.objects.filter(periodic_task_name="frequent").count() == redis_client.llen("low")


def test_a_run_is_sent_through_its_registered_task_when_this_process_knows_it(lease, redis_client):
    run, _ = record(lease)
    run.options = {}
    run.save()

    assert scheduled_run_send(run_id=run.pk)
    # tasks.ping declares no queue: it goes to the default queue through the registered task.
    assert [m["id"] for m in queued_messages(redis_client, "default")] == [run.task_id]


def test_the_relay_process_sends_runs_the_broker_refused(lease, redis_client):
    run, _ = record(lease)
    ScheduledRun.objects.filter(pk=run.pk).update(recorded_at=timezone.now() - timedelta(minutes=1))

    call_command("relay_outbox", "--once", stdout=io.StringIO())

    run.refresh_from_db()
    assert run.sent_at is not None
    assert [m["id"] for m in queued_messages(redis_client, "low")] == [run.task_id]


def test_a_stale_leader_saving_its_last_run_never_moves_a_newer_one_back(make_scheduler):
    every = IntervalSchedule.objects.create(every=10, period=IntervalSchedule.SECONDS)
    task = PeriodicTask.objects.create(name="ten-seconds", task="tasks.ping", interval=every)
    stale = make_scheduler("host-a:1:x")
    stale.tick()
    entry = stale._entry_for(PeriodicTask.objects.get(pk=task.pk))
    newer = timezone.now()
    PeriodicTask.objects.filter(pk=task.pk).update(last_run_at=newer)  # the new leader's last run

    entry.model.last_run_at = newer - timedelta(seconds=30)
    entry.save()

    assert PeriodicTask.objects.get(pk=task.pk).last_run_at == newer
