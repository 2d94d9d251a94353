"""Beat under faults, with real Beat, worker, relay and broker processes (issue 15, parts 2 and 3).

Each due run is a ``ScheduledRun`` row keyed by (schedule, due time); the scheduled task
(``tests.support.schedule_tasks.record_run``) adds one ledger row per execution, keyed by the run
it executes. Every test asserts two numbers over the runs Beat recorded: lost (recorded, never
executed) = 0 and executed twice = 0.

``BEAT_CHAOS_SECONDS`` (default 60) sets how long the two-Beat chaos test runs; ``make soak``
runs it for 10 minutes.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from datetime import datetime, timedelta
from itertools import pairwise

import pytest
from django.db import connection, transaction
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from tasks.models import BEAT_LEASE_NAME, BeatHeartbeat, ScheduledRun, SchedulePolicy
from tests.e2e.conftest import fast_recovery_env
from tests.support.ledger.models import Effect
from tests.support.outage import StoppableBroker
from tests.support.processes import CeleryBeat, CeleryWorker, ManagedProcess, Relay
from tests.support.schedule_tasks import RECORD_RUN, RUN_KEY_PREFIX, scheduled_run_key
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.serial]

CHAOS_SECONDS = float(os.environ.get("BEAT_CHAOS_SECONDS", "60"))
INTERVAL = 5  # the chaos schedule's interval, seconds
LEASE_TTL = 3  # BEAT_LOCK_TTL of the chaos and namespace tests
STOP_SECONDS = 5  # how long a leader stays SIGSTOPped: past its lease
SAMPLING_MARGIN = timedelta(seconds=0.5)  # how late the test may see a takeover
SLACK = 8  # a loaded 2-core machine: process start, a Beat tick, a takeover attempt each second


def beat_env(**overrides: str) -> dict[str, str]:
    """Fast-recovery process settings with no database lock timeout: the stall test holds a table
    lock longer than the lease, and the leader must still be waiting when the lock goes (with a
    4 s soft time limit, the settings refuse the 20 s default lock timeout anyway)."""
    return fast_recovery_env(DATABASE_LOCK_TIMEOUT="0", **overrides)


def every(name: str, seconds: int) -> PeriodicTask:
    """A run-once schedule of the recording task, overlap allowed (each run is independent)."""
    schedule = IntervalSchedule.objects.get_or_create(every=seconds, period=IntervalSchedule.SECONDS)[0]
    task = PeriodicTask.objects.create(name=name, task=RECORD_RUN, interval=schedule)
    SchedulePolicy.objects.create(periodic_task=task, misfire="run_once", overlap="allow")
    return task


def worker_process(env: dict[str, str]) -> CeleryWorker:
    return CeleryWorker(env=env, concurrency=2, extra_args=("--include", "tests.support.schedule_tasks"))


def executions() -> Counter[str]:
    """How many times each scheduled run was executed, by ledger key."""
    keys = Effect.objects.filter(key__startswith=RUN_KEY_PREFIX).values_list("key", flat=True)
    return Counter(keys)


def lost_and_twice(name: str) -> tuple[list[ScheduledRun], list[ScheduledRun]]:
    """The recorded runs of ``name`` never executed, and those executed more than once."""
    counts = executions()
    runs = list(ScheduledRun.objects.filter(periodic_task_name=name))
    return (
        [run for run in runs if counts[scheduled_run_key(run.pk)] == 0],
        [run for run in runs if counts[scheduled_run_key(run.pk)] > 1],
    )


def all_executed(name: str) -> bool:
    return not lost_and_twice(name)[0]


def stray_executions(name: str) -> list[str]:
    """Executions of no recorded run of ``name`` (a message sent without its record)."""
    known = {scheduled_run_key(pk[0]) for pk in ScheduledRun.objects.filter(periodic_task_name=name).values_list("pk")}
    return [key for key in executions() if key not in known]


def state(name: str, *processes: ManagedProcess) -> str:
    """What a stalled run looks like: the runs, their executions, each process's log tail."""
    counts = executions()
    runs = ScheduledRun.objects.filter(periodic_task_name=name).order_by("due_at")
    lines = [
        f"{run.pk} due {run.due_at:%H:%M:%S.%f} by {run.leader}/{run.leader_generation} "
        f"sent {run.sent_at} attempts {run.attempts} ran {counts[scheduled_run_key(run.pk)]}"
        for run in runs
    ]
    logs = "".join(f"\n--- {p.name} (running={p.running}) ---\n{p.log()[-3000:]}" for p in processes)
    return "\n".join(lines) + logs


# --- 1. A broker outage across a due time -------------------------------------------------------
@pytest.mark.broker
def test_a_run_due_while_the_broker_is_down_runs_once_after_it_returns(clean_broker):
    """A 10 s run-once schedule, the broker stopped for 25 s: the run due meanwhile is recorded,
    sent once the broker is back (by the relay), and executed once; the due times it covers
    (run once) add no run. On RabbitMQ the outage is a stopped TCP proxy (tests/support/outage.py)."""
    broker = StoppableBroker().start()
    env = beat_env(CELERY_BROKER_URL=broker.url)
    every("every-10", 10)
    worker, relay = worker_process(env).start(), Relay(env=env).start()
    beat = CeleryBeat(env=env).start()
    processes = (beat, worker, relay, broker.process)
    try:
        # Stop right after a run executed: the next due time (10 s on) falls in the outage.
        wait_until(
            lambda: Effect.objects.exists() and all_executed("every-10"),
            timeout=60,
            message=lambda: state("every-10", *processes),
        )
        broker.stop()
        stopped_at = timezone.now()
        time.sleep(25)
        broker.start()
        restarted_at = timezone.now()
        during = ScheduledRun.objects.filter(periodic_task_name="every-10", due_at__gt=stopped_at)
        missed = during.get(due_at__lt=restarted_at)  # two due times passed: run once is one run
        wait_until(
            lambda: Effect.objects.filter(key=scheduled_run_key(missed.pk)).exists(),
            timeout=60,
            message=lambda: state("every-10", *processes),
        )
        beat.stop()
        wait_until(lambda: all_executed("every-10"), timeout=60, message=lambda: state("every-10", *processes))
    finally:
        for process in processes:
            process.stop(timeout=10)
    missed.refresh_from_db()
    assert missed.sent_at >= restarted_at
    assert missed.attempts >= 2  # Beat's own try failed; the broker was down
    assert Effect.objects.get(key=scheduled_run_key(missed.pk)).created_at >= restarted_at
    assert "not sent yet" in beat.log()  # the second due time in the outage was covered, not queued
    lost, twice = lost_and_twice("every-10")
    assert (len(lost), len(twice), stray_executions("every-10")) == (0, 0, [])


# --- 2. Two Beats, the leader stopped past its lease and killed ----------------------------------
class LeaseWatcher(threading.Thread):
    """Samples the lease row every 50 ms: which (generation, leader) held it, from when, in order."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.held: list[tuple[int, str, datetime]] = []
        self._done = threading.Event()

    def run(self) -> None:
        try:
            while not self._done.wait(0.05):
                row = BeatHeartbeat.objects.filter(name=BEAT_LEASE_NAME).values_list("generation", "leader").first()
                if row and row[1] and (not self.held or self.held[-1][:2] != row):
                    self.held.append((*row, timezone.now()))
        finally:
            connection.close()

    def stop(self) -> None:
        self._done.set()
        self.join(timeout=10)

    def stale_runs(self, runs: list[ScheduledRun]) -> list[ScheduledRun]:
        """Runs recorded under a generation other than the one holding the lease when they were
        recorded (give or take the 50 ms sampling, with a margin), or by another Beat than its holder."""
        holders = {generation: leader for generation, leader, _ in self.held}
        stale = []
        for run in runs:
            current = [generation for generation, _, seen in self.held if seen <= run.recorded_at - SAMPLING_MARGIN]
            if holders.get(run.leader_generation) != run.leader or (current and run.leader_generation < current[-1]):
                stale.append(run)
        return stale


def leader_of(beats: list[CeleryBeat]) -> CeleryBeat | None:
    holder = BeatHeartbeat.objects.filter(name=BEAT_LEASE_NAME).values_list("leader", flat=True).first() or ""
    return next((beat for beat in beats if beat.running and f":{beat.proc.pid}:" in holder), None)


def test_each_due_time_runs_once_while_the_leader_is_stopped_past_its_lease_and_killed(clean_broker):
    env = beat_env(BEAT_LOCK_TTL=str(LEASE_TTL))
    every("chaos", INTERVAL)
    worker, relay = worker_process(env).start(), Relay(env=env).start()
    beats = [CeleryBeat(env=env).start(), CeleryBeat(env=env).start()]
    everything = [worker, relay]
    watcher = LeaseWatcher()
    watcher.start()
    stops = kills = 0
    started = timezone.now()
    deadline = time.monotonic() + CHAOS_SECONDS
    try:
        while time.monotonic() < deadline:
            leader = wait_until(lambda: leader_of(beats), timeout=30, message=lambda: state("chaos", *beats))
            standby = next(beat for beat in beats if beat is not leader)
            standby.wait_for_log("standing by", timeout=30)
            recorded = ScheduledRun.objects.filter(periodic_task_name="chaos").count()
            # Each leadership records a run or two before the next fault.
            wait_until(
                lambda n=recorded: ScheduledRun.objects.filter(periodic_task_name="chaos").count() > n,
                timeout=INTERVAL + LEASE_TTL + STOP_SECONDS + SLACK,
                message=lambda: state("chaos", *beats, relay),
            )
            time.sleep((stops + kills) % 3 * 2)  # faults at different points of the interval
            if (stops + kills) % 3 == 2:
                leader.kill()
                beats[beats.index(leader)] = CeleryBeat(env=env).start()
                everything.append(leader)
                kills += 1
            else:
                lost_before = leader.log().count("lost the Beat lock")
                leader.signal(signal.SIGSTOP)
                time.sleep(STOP_SECONDS)
                # Resumed only once the standby holds the lease: the stale leader must find it taken.
                wait_until(lambda s=standby: leader_of(beats) is s, timeout=SLACK, message=lambda: state("chaos"))
                leader.signal(signal.SIGCONT)
                stops += 1
                # The resumed leader finds its lease taken and stands down.
                leader.wait_for_log("lost the Beat lock", count=lost_before + 1, timeout=SLACK + LEASE_TTL)
        ended = timezone.now()
        for beat in beats:
            beat.stop(timeout=10)
        watcher.stop()
        wait_until(lambda: all_executed("chaos"), timeout=60, message=lambda: state("chaos", *beats, relay, worker))
    finally:
        for process in [*beats, *everything]:
            process.stop(timeout=10)
        watcher.stop()

    runs = list(ScheduledRun.objects.filter(periodic_task_name="chaos").order_by("recorded_at"))
    lost, twice = lost_and_twice("chaos")
    assert (len(lost), len(twice), stray_executions("chaos")) == (0, 0, [])
    print(
        f"\nbeat chaos: {CHAOS_SECONDS:.0f}s, {stops} stops past the lease, {kills} kills, {len(runs)} runs, "
        f"{len({run.leader_generation for run in runs})} leader generations, lost 0, twice 0"
    )
    # Fenced: runs in the order they were recorded never go back to an older generation, and each
    # was recorded by the Beat that held that generation.
    generations = [run.leader_generation for run in runs]
    assert generations == sorted(generations)
    assert watcher.stale_runs(runs) == [], watcher.held
    assert len({run.leader for run in runs}) >= 2
    # No due time twice: due times are at least one interval apart.
    assert min(b.due_at - a.due_at for a, b in pairwise(runs)) >= timedelta(seconds=INTERVAL - 0.5)
    # None missed: a failover's catch-up run comes within the lease, the stop and some slack.
    bound = timedelta(seconds=INTERVAL + LEASE_TTL + STOP_SECONDS + SLACK)
    recorded = [started, *(run.recorded_at for run in runs), ended]
    assert max(b - a for a, b in pairwise(recorded)) <= bound, state("chaos")


def test_a_leader_stalled_in_a_query_past_its_lease_records_nothing_when_it_resumes(clean_broker):
    """The leader blocks inside its due-run check (the test holds a lock on the runs table) until
    the standby has taken its lease; when the lock goes, the fencing token refuses its record."""
    if connection.vendor != "postgresql":
        pytest.skip("the stall is a PostgreSQL table lock")
    env = beat_env(BEAT_LOCK_TTL=str(LEASE_TTL))
    every("stalled", 4)
    worker, relay = worker_process(env).start(), Relay(env=env).start()
    first = CeleryBeat(env=env).start()
    first.wait_for_log("is now the active Beat", timeout=30)
    second = CeleryBeat(env=env).start()
    second.wait_for_log("standing by", timeout=30)
    processes = (first, second, worker, relay)
    runs = ScheduledRun.objects.filter(periodic_task_name="stalled")
    try:
        wait_until(runs.exists, timeout=30, message=lambda: state("stalled", *processes))
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"LOCK TABLE {ScheduledRun._meta.db_table} IN ACCESS EXCLUSIVE MODE")
            # The leader's next due check waits on the lock, so it cannot renew its lease.
            wait_until(
                lambda: f":{second.proc.pid}:" in BeatHeartbeat.objects.get(name=BEAT_LEASE_NAME).leader,
                timeout=4 + LEASE_TTL + SLACK,
                message=lambda: state("stalled", *processes),
            )
            taken_at = timezone.now()
            time.sleep(1)
        first.wait_for_log("lost the Beat lock before recording", timeout=30)
        wait_until(lambda: runs.filter(recorded_at__gt=taken_at).count() >= 2, timeout=30)
        first.stop()
        second.stop()
        wait_until(lambda: all_executed("stalled"), timeout=60, message=lambda: state("stalled", *processes))
    finally:
        for process in processes:
            process.stop(timeout=10)
    stalled_leader = runs.earliest("recorded_at").leader
    assert not runs.filter(leader=stalled_leader, recorded_at__gt=taken_at).exists(), state("stalled")
    lost, twice = lost_and_twice("stalled")
    assert (len(lost), len(twice), stray_executions("stalled")) == (0, 0, [])


# --- 3. Two Beats with the same host name and pid -----------------------------------------------
HOST = "beat-host"


def namespaced_beat(env: dict[str, str]) -> CeleryBeat:
    """A Beat that is PID 1 of its own PID namespace, on host name ``beat-host`` (UTS namespace)."""
    beat = CeleryBeat(env=env)
    beat.args = ["unshare", "-fpu", "--mount-proc", "sh", "-c", f'hostname {HOST} && exec "$@"', "sh", *beat.args]
    return beat


def identities(beat: CeleryBeat, event: str) -> list[str]:
    return re.findall(rf"PlatformScheduler: (\S+) {event}", beat.log())


def test_two_beats_with_the_same_host_name_and_pid_have_one_leader(clean_broker):
    probe = subprocess.run(["unshare", "-fpu", "--mount-proc", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"unshare of PID and UTS namespaces not permitted here: {probe.stderr.decode().strip()}")
    env = beat_env(BEAT_LOCK_TTL=str(LEASE_TTL))
    every("same-host", 2)
    worker, relay = worker_process(env).start(), Relay(env=env).start()
    first = namespaced_beat(env).start()
    first.wait_for_log("is now the active Beat", timeout=30)
    second = namespaced_beat(env).start()
    second.wait_for_log("standing by", timeout=30)
    processes = (first, second, worker, relay)
    try:
        wait_until(
            lambda: ScheduledRun.objects.filter(periodic_task_name="same-host").count() >= 3,
            timeout=60,
            message=lambda: state("same-host", *processes),
        )
        assert identities(second, "is now the active Beat") == [], second.log()[-3000:]
        assert len(identities(first, "is now the active Beat")) == 1, first.log()[-3000:]
        leader, standby = identities(first, "is now the active Beat")[0], identities(second, "standing by")[0]
        assert leader.startswith(f"{HOST}:1:") and standby.startswith(f"{HOST}:1:")  # same host, both PID 1
        assert leader != standby
        assert set(ScheduledRun.objects.values_list("leader", flat=True)) == {leader}

        # The standby takes over from a killed leader; its runs carry its own identity.
        first.kill()
        second.wait_for_log("is now the active Beat", timeout=LEASE_TTL + SLACK)
        wait_until(
            lambda: ScheduledRun.objects.filter(leader=standby).count() >= 2,
            timeout=30,
            message=lambda: state("same-host", *processes),
        )
        second.stop()
        wait_until(lambda: all_executed("same-host"), timeout=60, message=lambda: state("same-host", *processes))
    finally:
        for process in processes:
            process.stop(timeout=10)
    lost, twice = lost_and_twice("same-host")
    assert (len(lost), len(twice), stray_executions("same-host")) == (0, 0, [])
    runs = list(ScheduledRun.objects.order_by("due_at"))
    assert min(b.due_at - a.due_at for a, b in pairwise(runs)) >= timedelta(seconds=2 - 0.5)
    assert max(run.leader_generation for run in runs if run.leader == leader) < min(
        run.leader_generation for run in runs if run.leader == standby
    )
