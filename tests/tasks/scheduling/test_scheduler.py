"""PlatformScheduler: one active Beat, misfire and overlap policies, incremental reloads.

The first tests drive the scheduler in this process (its reloads and policies, step by step;
its lease is in test_lease.py); the slow ones run real ``celery beat`` processes against the
test database.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta
from itertools import pairwise

import pytest
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask, PeriodicTasks
from django_celery_results.models import TaskResult

from tasks.models import ScheduleChange, ScheduledRun, SchedulePolicy
from tasks.scheduling.scheduler import PlatformScheduler
from tests.support.schedule_tasks import SLOW
from tests.support.scheduling import lock_row, messages
from tests.support.waiting import wait_until


def interval(seconds: int) -> IntervalSchedule:
    return IntervalSchedule.objects.get_or_create(every=seconds, period=IntervalSchedule.SECONDS)[0]


def periodic_task(name: str, *, every: int, task: str = "tasks.ping", misfire="run_once", overlap="allow", **fields):
    created = PeriodicTask.objects.create(name=name, task=task, interval=interval(every), **fields)
    SchedulePolicy.objects.create(periodic_task=created, misfire=misfire, overlap=overlap)
    return created


def check_changes_now(scheduler: PlatformScheduler) -> None:
    # The scheduler reads PeriodicTasks.last_update once a second; a test does not wait for it.
    scheduler._next_change_check = 0


# --- Incremental reloads ----------------------------------------------------------------
def test_an_edit_among_many_schedules_reads_only_the_changed_row(
    make_scheduler, scheduler_log, django_assert_max_num_queries
):
    hourly = interval(3600)
    PeriodicTask.objects.bulk_create(
        PeriodicTask(name=f"job-{n}", task="tasks.ping", interval=hourly, kwargs="{}") for n in range(300)
    )
    an_hour_ago = timezone.now() - timedelta(hours=1)
    PeriodicTask.objects.update(date_changed=an_hour_ago, last_run_at=an_hour_ago + timedelta(minutes=30))
    PeriodicTasks.update_changed()
    scheduler = make_scheduler("host-a:1")
    scheduler.tick()
    assert len(scheduler.schedule) == 300

    edited = PeriodicTask.objects.get(name="job-7")
    edited.kwargs = '{"edited": true}'
    edited.save()
    check_changes_now(scheduler)
    with django_assert_max_num_queries(8):
        scheduler.tick()

    assert scheduler.schedule["job-7"].kwargs == {"edited": True}
    assert "PlatformScheduler: schedule changed: read 1 rows, 1 entries changed" in messages(scheduler_log)
    assert not any("full re-read" in message for message in messages(scheduler_log))


def test_deletes_disables_and_additions_reach_the_running_scheduler(make_scheduler, scheduler_log):
    hourly = interval(3600)
    for name in ("kept", "deleted", "disabled-by-update", "disabled-by-save"):
        PeriodicTask.objects.create(name=name, task="tasks.ping", interval=hourly)
    scheduler = make_scheduler("host-a:1")
    scheduler.tick()

    PeriodicTask.objects.get(name="deleted").delete()
    PeriodicTask.objects.filter(name="disabled-by-update").update(enabled=False)
    PeriodicTasks.update_changed()
    disabled = PeriodicTask.objects.get(name="disabled-by-save")
    disabled.enabled = False
    disabled.save()
    PeriodicTask.objects.create(name="added", task="tasks.ping", interval=hourly)
    check_changes_now(scheduler)
    scheduler.tick()

    assert set(scheduler.schedule) == {"kept", "added"}


def test_stale_heap_events_of_edited_schedules_do_not_pile_up(make_scheduler):
    task = PeriodicTask.objects.create(name="often-edited", task="tasks.ping", interval=interval(3600))
    scheduler = make_scheduler("host-a:1")
    scheduler.tick()

    for n in range(150):
        task.kwargs = json.dumps({"n": n})
        task.save()
        check_changes_now(scheduler)
        scheduler.tick()

    assert scheduler.schedule["often-edited"].kwargs == {"n": 149}
    assert len(scheduler._heap) <= 2 * len(scheduler.schedule) + 100


def test_a_change_no_row_shows_falls_back_to_a_full_comparison(make_scheduler, scheduler_log):
    every = IntervalSchedule.objects.create(every=10, period=IntervalSchedule.MINUTES)
    PeriodicTask.objects.create(name="job", task="tasks.ping", interval=every)
    PeriodicTask.objects.update(date_changed=timezone.now() - timedelta(hours=1))
    scheduler = make_scheduler("host-a:1")
    scheduler.tick()

    IntervalSchedule.objects.filter(pk=every.pk).update(every=20)
    PeriodicTasks.update_changed()
    check_changes_now(scheduler)
    scheduler.tick()

    assert scheduler.schedule["job"].schedule.run_every == timedelta(minutes=20)
    assert "PlatformScheduler: full re-read of 1 schedules, 1 changed" in messages(scheduler_log)


def test_the_full_comparison_rebuilds_only_the_entries_whose_rows_differ(make_scheduler, monkeypatch):
    hourly = interval(3600)
    rows = [PeriodicTask(name=f"job-{n}", task="tasks.ping", interval=hourly) for n in range(50)]
    PeriodicTask.objects.bulk_create(rows)
    scheduler = make_scheduler("host-a:1")
    scheduler.tick()
    untouched = scheduler.schedule["job-1"]
    PeriodicTask.objects.filter(name="job-3").update(kwargs='{"by": "update"}')
    built = []
    entry_for = scheduler._entry_for
    monkeypatch.setattr(scheduler, "_entry_for", lambda model: built.append(model.name) or entry_for(model))

    scheduler._full_reload()

    assert built == ["job-3"]
    assert scheduler.schedule["job-3"].kwargs == {"by": "update"}
    assert scheduler.schedule["job-1"] is untouched


# --- Policies, step by step ---------------------------------------------------------------
def ran_before(name: str, *, seconds_ago: int) -> None:
    PeriodicTask.objects.filter(name=name).update(
        last_run_at=timezone.now() - timedelta(seconds=seconds_ago), total_run_count=2
    )


def test_misfire_skip_drops_runs_missed_while_no_beat_was_active(make_scheduler, scheduler_log):
    periodic_task("skipper", every=10, misfire="skip")
    ran_before("skipper", seconds_ago=25)  # due 15 s and 5 s ago
    scheduler = make_scheduler("host-a:1")

    for _ in range(3):
        scheduler.tick()

    assert "PlatformScheduler: skipping skipper: missed run (misfire policy skip)" in messages(scheduler_log)
    assert not any(message.startswith("PlatformScheduler: sent skipper") for message in messages(scheduler_log))
    task = PeriodicTask.objects.get(name="skipper")
    assert timezone.now() - task.last_run_at < timedelta(seconds=5)
    assert task.total_run_count == 2


def test_misfire_run_once_sends_one_run_for_all_missed_ones(make_scheduler, scheduler_log):
    periodic_task("catcher", every=10, misfire="run_once")
    ran_before("catcher", seconds_ago=25)
    scheduler = make_scheduler("host-a:1")

    for _ in range(3):
        scheduler.tick()

    sent = [message for message in messages(scheduler_log) if message.startswith("PlatformScheduler: sent catcher")]
    assert len(sent) == 1
    assert "PlatformScheduler: catching up missed run of catcher (misfire policy run_once)" in messages(scheduler_log)
    assert PeriodicTask.objects.get(name="catcher").total_run_count == 3


# --- Expiry of periodic runs ---------------------------------------------------------------
def recorded_expiry(name: str) -> str | None:
    return ScheduledRun.objects.get(periodic_task_name=name).options.get("expires")


def test_a_periodic_run_expires_a_period_after_it_is_sent(make_scheduler):
    periodic_task("every-ten", every=10)
    ran_before("every-ten", seconds_ago=12)
    make_scheduler("host-a:1").tick()

    # Seconds from the publish (Celery's reading of a number): a run the relay sends late after
    # an outage still gets its period.
    assert recorded_expiry("every-ten") == 10


def test_a_schedules_own_expiry_wins_and_the_setting_turns_the_default_off(make_scheduler, settings):
    periodic_task("own-expiry", every=10, expire_seconds=3)
    ran_before("own-expiry", seconds_ago=12)
    settings.SCHEDULE_RUNS_EXPIRE_AT_NEXT_DUE = False
    periodic_task("no-expiry", every=10)
    ran_before("no-expiry", seconds_ago=12)
    scheduler = make_scheduler("host-a:1")
    for _ in range(3):  # one due run per tick
        scheduler.tick()

    assert recorded_expiry("own-expiry") == 3
    assert recorded_expiry("no-expiry") is None


def test_beat_disabling_an_expired_schedule_is_recorded_as_beat(make_scheduler):
    periodic_task("expired", every=1, expires=timezone.now() - timedelta(seconds=1))
    scheduler = make_scheduler("host-a:1")

    scheduler.tick()

    change = ScheduleChange.objects.get(periodic_task_name="expired", action="changed", changes__has_key="enabled")
    assert (change.changes["enabled"], change.source) == ([True, False], "beat")
    PeriodicTask.objects.create(name="after", task="tasks.ping", interval=interval(60))
    assert ScheduleChange.objects.get(periodic_task_name="after").source == "code"


def test_overlap_skip_waits_for_a_started_run_and_for_a_run_still_in_the_queue(make_scheduler, scheduler_log):
    periodic_task("overlapping", every=1, overlap="skip")
    TaskResult.objects.create(task_id="running-1", status="STARTED", periodic_task_name="overlapping")
    scheduler = make_scheduler("host-a:1")

    skipped = "PlatformScheduler: skipping overlapping: previous run still running (overlap policy skip)"
    wait_until(lambda: scheduler.tick() == 0 and messages(scheduler_log)[-1] == skipped, timeout=15)

    TaskResult.objects.filter(task_id="running-1").update(status="SUCCESS")
    wait_until(lambda: scheduler.tick() == 0 and "sent overlapping" in messages(scheduler_log)[-1], timeout=15)
    sent_id = scheduler.schedule["overlapping"].last_task_id
    assert sent_id

    # No worker runs it: the run this scheduler sent is queued, so the next one waits.
    wait_until(lambda: scheduler.tick() == 0 and "skipping overlapping" in messages(scheduler_log)[-1], timeout=15)
    TaskResult.objects.create(task_id=sent_id, status="SUCCESS", periodic_task_name="overlapping")
    wait_until(lambda: scheduler.tick() == 0 and "sent overlapping" in messages(scheduler_log)[-1], timeout=15)


def test_overlap_allow_sends_every_due_run(make_scheduler, scheduler_log):
    periodic_task("parallel", every=1, overlap="allow")
    TaskResult.objects.create(task_id="running-1", status="STARTED", periodic_task_name="parallel")
    scheduler = make_scheduler("host-a:1")

    wait_until(lambda: scheduler.tick() == 0 and len(sent_lines(scheduler_log, "parallel")) >= 2, timeout=15)

    assert not any("skipping parallel" in message for message in messages(scheduler_log))


def sent_lines(caplog, name: str) -> list[str]:
    return [message for message in messages(caplog) if message.startswith(f"PlatformScheduler: sent {name} ")]


# --- Real Beat processes ------------------------------------------------------------------
def sent_times(*beats) -> list[datetime]:
    """When each ``sent`` line of these Beats says it sent, oldest first."""
    times = []
    for beat, name in beats:
        for line in beat.sent(name):
            stamp = line.split(f"sent {name} at ", 1)[1].split(" ", 1)[0]
            times.append(datetime.fromisoformat(stamp))
    return sorted(times)


@pytest.mark.slow
def test_two_beats_send_each_tick_once_and_the_standby_carries_on_after_kill_9(start_beat):
    # tasks.noop stores no result, so its runs never block each other and no worker is needed.
    periodic_task("every-second", every=1, task="tasks.noop", overlap="allow")
    first = start_beat()
    first.wait_for_log("is now the active Beat", timeout=20)
    second = start_beat()
    second.wait_for_log("standing by", timeout=20)

    wait_until(lambda: len(first.sent("every-second")) >= 20, timeout=40, message="20 ticks by the active Beat")
    assert second.sent("every-second") == []

    first.kill()
    sent_by_first = len(first.sent("every-second"))
    second.wait_for_log("is now the active Beat", timeout=20)
    wait_until(lambda: len(second.sent("every-second")) >= 5, timeout=20, message="5 ticks by the standby")

    assert len(first.sent("every-second")) == sent_by_first
    times = sent_times((first, "every-second"), (second, "every-second"))
    # A tick sent by both Beats would show as two sends a moment apart.
    assert min(later - earlier for earlier, later in pairwise(times)) > timedelta(seconds=0.5)
    assert f":{second.proc.pid}:" in lock_row().leader


@pytest.mark.slow
def test_after_beat_was_down_across_two_due_times_run_once_sends_one_and_skip_sends_none(start_beat):
    periodic_task("catch-up", every=4, task="tasks.noop", misfire="run_once")
    periodic_task("skip-missed", every=4, task="tasks.noop", misfire="skip")
    beat = start_beat()
    wait_until(lambda: beat.sent("catch-up") and beat.sent("skip-missed"), timeout=20, message="first runs")
    beat.stop()

    last_run = max(
        PeriodicTask.objects.filter(name__in=["catch-up", "skip-missed"]).values_list("last_run_at", flat=True)
    )
    wait_until(lambda: timezone.now() > last_run + timedelta(seconds=2 * 4 + 1.5), timeout=20, message="two due times")
    restarted = start_beat()
    restarted.wait_for_log("skipping skip-missed: missed run (misfire policy skip)", timeout=20)
    restarted.wait_for_log("sent catch-up at", timeout=20)
    # Give a second catch-up send, if there were one, time to show; the next regular runs are 4 s away.
    time.sleep(1.5)

    assert len(restarted.sent("catch-up")) == 1
    assert restarted.sent("skip-missed") == []


@pytest.mark.slow
def test_a_job_slower_than_its_interval_never_runs_twice_at_once_with_overlap_skip(start_beat, schedule_worker):
    periodic_task("slow-job", every=1, task=SLOW, kwargs='{"seconds": 2.5}', overlap="skip")
    beat = start_beat()

    finished = TaskResult.objects.filter(periodic_task_name="slow-job", status="SUCCESS")
    wait_until(lambda: finished.count() >= 3, timeout=40, message="three runs of the slow job")
    beat.stop()
    wait_until(
        lambda: not TaskResult.objects.filter(periodic_task_name="slow-job", status="STARTED").exists(), timeout=15
    )

    runs = list(finished.order_by("date_started").values_list("date_started", "date_done"))
    for (_, previous_done), (next_started, _) in pairwise(runs):
        assert next_started >= previous_done
    assert "skipping slow-job: previous run still running (overlap policy skip)" in beat.log()
