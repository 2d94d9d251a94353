"""The Beat lease (``tasks.scheduling.lease``): one active Beat holds the lock row and writes the
heartbeat; a standby takes over an expired lease; monitoring reads the row as ``beat_status``
and judges it with ``beat_lateness`` (DESIGN.md section 5).

The first tests drive in-process schedulers, as Beat does, tick by tick.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import OperationalError
from django.utils import timezone

from tasks.models import BEAT_LEASE_NAME, BeatHeartbeat
from tasks.scheduling import lease as lease_module
from tasks.scheduling.lease import BeatLease, BeatStatus, beat_lateness, beat_status
from tests.support.scheduling import lock_row, messages

# --- Schedulers sharing the lease (moved from test_scheduler.py) -------------------------


def test_one_scheduler_holds_the_lock_and_writes_the_heartbeat_while_another_stands_by(make_scheduler):
    active, standby = make_scheduler("host-a:1"), make_scheduler("host-b:2")

    active.tick()
    standby.tick()

    row = lock_row()
    assert (row.leader, active.lease.leader, standby.lease.leader) == ("host-a:1", True, False)
    assert row.started_at is not None and row.last_tick_at is not None
    first_tick = row.last_tick_at
    active.lease._last_renew = 0  # renewals happen once a second; force one
    active.tick()
    assert lock_row().last_tick_at > first_tick


def test_a_standby_takes_over_an_expired_lease_and_the_old_leader_stands_down(make_scheduler, scheduler_log):
    active, standby = make_scheduler("host-a:1"), make_scheduler("host-b:2")
    active.tick()
    BeatHeartbeat.objects.filter(name=BEAT_LEASE_NAME).update(last_tick_at=timezone.now() - timedelta(seconds=30))

    standby.lease._next_attempt = 0
    standby.tick()
    active.lease._last_renew = 0
    active.tick()

    assert (lock_row().leader, standby.lease.leader, active.lease.leader) == ("host-b:2", True, False)
    assert "PlatformScheduler: host-a:1 lost the Beat lock; standing by" in messages(scheduler_log)


def test_a_live_lease_is_not_taken_and_closing_the_active_scheduler_releases_it(make_scheduler):
    active, standby = make_scheduler("host-a:1"), make_scheduler("host-b:2")
    active.tick()
    standby.tick()
    assert lock_row().leader == "host-a:1"

    active.close()
    standby.lease._next_attempt = 0
    standby.tick()

    assert lock_row().leader == "host-b:2"


# --- BeatLease on its own -----------------------------------------------------------------


def lease_as(identity: str, *, ttl: float = 5) -> BeatLease:
    lease = BeatLease(ttl=ttl)
    lease.identity = identity
    return lease


def test_the_lease_row_is_created_and_taken_when_no_beat_ever_ran(transactional_db):
    lease = lease_as("host-a:1")

    assert lease.hold() is True

    row = lock_row()
    assert (row.leader, lease.leader, lease.valid()) == ("host-a:1", True, True)
    assert row.started_at is not None and row.last_tick_at is not None
    assert lease.active_since is not None


def test_a_live_lease_is_not_taken_when_another_beat_ticked_recently(transactional_db):
    BeatHeartbeat.objects.create(name=BEAT_LEASE_NAME, leader="host-b:2", last_tick_at=timezone.now())
    lease = lease_as("host-a:1")

    assert lease.hold() is False

    assert (lock_row().leader, lease.leader, lease.valid()) == ("host-b:2", False, False)


def test_no_beat_holds_the_lock_when_the_active_one_releases_it(transactional_db):
    lease = lease_as("host-a:1")
    lease.hold()

    lease.release()

    assert (lock_row().leader, lease.leader, lease.valid()) == ("", False, False)
    assert beat_lateness(beat_status(), max_age=60).startswith("no Beat holds the lock")


def test_the_leader_keeps_its_lease_while_it_is_valid_when_the_database_is_unreachable(transactional_db, monkeypatch):
    lease = lease_as("host-a:1", ttl=60)
    lease.hold()

    def unreachable(**lookups):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(lease_module.BeatHeartbeat.objects, "filter", unreachable)
    lease._last_renew = 0  # renewals happen once a second; force one
    assert lease.hold() is True  # its lease has not run out by its own clock

    lease._valid_until = 0  # ... and now it has: it must stop sending
    assert lease.hold() is False
    assert (lease.leader, lease.valid()) == (False, False)


# --- beat_status and beat_lateness --------------------------------------------------------


def test_there_is_no_beat_status_when_no_beat_ever_ran(db):
    assert beat_status() is None
    assert beat_lateness(beat_status(), max_age=60) == "Beat has never ticked (no heartbeat)"


def test_the_beat_status_gives_the_leader_and_the_age_of_its_last_tick_when_a_beat_ticked(db):
    now = timezone.now()
    started, ticked = now - timedelta(hours=1), now - timedelta(seconds=12)
    BeatHeartbeat.objects.create(name=BEAT_LEASE_NAME, leader="host-a:1", started_at=started, last_tick_at=ticked)

    assert beat_status(now=now) == BeatStatus(
        leader="host-a:1", started_at=started, last_tick_at=ticked, age_seconds=12.0
    )


def test_the_beat_status_has_no_age_when_the_row_never_ticked(db):
    BeatHeartbeat.objects.create(name=BEAT_LEASE_NAME, leader="")
    status = beat_status()
    assert (status.leader, status.last_tick_at, status.age_seconds) == ("", None, None)


def test_the_beat_age_is_zero_not_negative_when_the_tick_is_ahead_of_this_clock(db):
    now = timezone.now()
    BeatHeartbeat.objects.create(name=BEAT_LEASE_NAME, leader="host-a:1", last_tick_at=now + timedelta(seconds=3))
    assert beat_status(now=now).age_seconds == 0.0


def test_the_beat_status_reads_only_the_lease_row_when_other_rows_exist(db):
    now = timezone.now()
    BeatHeartbeat.objects.create(name="other-lock", leader="host-z:9", last_tick_at=now)
    assert beat_status(now=now) is None


@pytest.mark.parametrize(
    ("leader", "age", "late"),
    [("host:1", 5.0, False), ("", 5.0, True), ("host:1", 600.0, True), ("host:1", None, True)],
)
def test_beat_is_late_when_no_leader_holds_the_lock_or_the_tick_is_old(leader, age, late):
    beat = BeatStatus(leader=leader, started_at=None, last_tick_at=None, age_seconds=age)
    assert bool(beat_lateness(beat, max_age=60)) is late
    assert beat_lateness(None, max_age=60) == "Beat has never ticked (no heartbeat)"
