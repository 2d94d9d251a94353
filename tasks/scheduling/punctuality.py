"""Are a schedule's runs on time? Its recorded runs compared with the runs its schedule implies.

The implied runs are the due times Celery's own schedule code gives, walked forward from the
start of the window (``SCHEDULE_PUNCTUALITY_WINDOW`` seconds back, or the schedule's last change
if later). A due time is:

- **on time** when Beat recorded its run and sent it within ``SCHEDULE_LATE_AFTER`` seconds;
- **late** when it was sent later, or is recorded and still unsent past that;
- **missed** when no run was recorded for it (Beat down and the misfire policy skipped it, or
  the overlap policy skipped it) once ``SCHEDULE_LATE_AFTER`` seconds have passed.

An interval schedule counts from its last run, so its implied runs are a period after each
recorded one: a gap between runs longer than a period (plus the grace) holds missed runs.

Around a daylight-saving change a crontab in a local zone may give the same instant twice (a
wall-clock time that does not exist maps onto the next hour's) or skip the repeated hour of
the fall-back; the implied runs keep each instant once, as Beat records each once
(``ScheduledRun`` is unique per schedule and due time).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import schedules as celery_schedules
from django.conf import settings
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from tasks.models import ScheduledRun
from tasks.scheduling.next_run import schedule_due_at

ON_TIME, LATE, MISSED = "on time", "late", "missed"
NO_RUNS_DUE, UNKNOWN = "no runs due", "unknown"
# Due times looked at per schedule at most: a schedule every second over a day would be 86,400.
MAX_DUE_TIMES = 1000


@dataclass(frozen=True)
class Punctuality:
    """How a schedule's runs in the window compare with the runs it implies."""

    name: str
    state: str
    on_time: int = 0
    late: int = 0
    missed: int = 0
    since: datetime | None = None
    missed_due_at: list[datetime] = field(default_factory=list)

    @property
    def summary(self) -> str:
        if self.state in (NO_RUNS_DUE, UNKNOWN):
            return self.state
        return f"{self.state}: {self.on_time} on time, {self.late} late, {self.missed} missed"


def implied_due_times(
    schedule: Any, *, start: datetime, end: datetime, limit: int = MAX_DUE_TIMES
) -> Iterator[datetime]:
    """The due times ``schedule`` implies after ``start`` up to ``end`` (at most ``limit``), each
    instant once and in order, as Celery computes them (crontabs in their own time zone; an
    interval, which counts from its last run, a period apart from ``start``)."""
    # Compared in UTC: two datetimes of one zone compare by wall clock, not by instant.
    last, count = start.astimezone(UTC), 0
    while count < limit:
        with _schedule_now(schedule, last):
            due = schedule_due_at(schedule, last).astimezone(UTC)
        if due <= last:
            # The same instant again (a local time skipped by a spring-forward maps onto the next
            # hour's): one run, so look on from just after it.
            last += timedelta(seconds=1)
            continue
        if due > end:
            return
        yield due
        last, count = due, count + 1


class _schedule_now:
    """Celery's crontab measures "remaining" from its ``nowfun``: pin it to the walk's position,
    so each step is computed as Beat computed it then."""

    def __init__(self, schedule: Any, moment: datetime) -> None:
        self.schedule, self.moment = schedule, moment

    def __enter__(self) -> None:
        self.saved = self.schedule.__dict__.get("nowfun")
        self.schedule.nowfun = lambda: self.moment

    def __exit__(self, *exc: object) -> None:
        if self.saved is None:
            self.schedule.__dict__.pop("nowfun", None)
        else:
            self.schedule.nowfun = self.saved


def schedule_punctuality(
    task: PeriodicTask, *, now: datetime | None = None, recorded: dict[datetime, datetime | None] | None = None
) -> Punctuality:
    """Whether ``task``'s runs in the window were on time, late or missed (see module docstring).

    ``recorded`` (due time -> sent time of its runs in the window) spares the query when the
    caller read the runs of many schedules at once (``schedules_punctuality``).
    """
    now = now or timezone.now()
    grace = timedelta(seconds=settings.SCHEDULE_LATE_AFTER)
    start = max(now - timedelta(seconds=settings.SCHEDULE_PUNCTUALITY_WINDOW), task.date_changed or now)
    if task.start_time:
        start = max(start, task.start_time)
    if not task.enabled or task.one_off:
        return Punctuality(task.name, NO_RUNS_DUE, since=start)
    if recorded is None:
        recorded = _recorded_runs([task.name], since=start, until=now - grace).get(task.name, {})
    runs = {due: sent for due, sent in sorted(recorded.items()) if start < due <= now - grace}
    late = sum(1 for due, sent in runs.items() if sent is None or sent - due > grace)
    try:
        schedule = task.schedule
        if _is_interval(schedule):
            missed = _interval_missed(list(runs), every=schedule.run_every, start=start, end=now, grace=grace)
        else:
            implied = list(implied_due_times(schedule, start=start, end=now - grace))
            missed = [due for due in implied if due not in runs]
    except Exception:  # a schedule Celery cannot evaluate
        return Punctuality(task.name, UNKNOWN, since=start)
    if not runs and not missed:
        return Punctuality(task.name, NO_RUNS_DUE, since=start)
    state = MISSED if missed else LATE if late else ON_TIME
    return Punctuality(task.name, state, len(runs) - late, late, len(missed), since=start, missed_due_at=missed)


def _is_interval(schedule: Any) -> bool:
    return isinstance(schedule, celery_schedules.schedule) and not isinstance(schedule, celery_schedules.crontab)


def _interval_missed(
    due_times: list[datetime], *, every: timedelta, start: datetime, end: datetime, grace: timedelta
) -> list[datetime]:
    """The due times an interval schedule skipped: an interval counts from the last run, so each
    gap between recorded runs (and from the window's start, and to now) longer than a period plus
    the grace held one missed run per whole period past the first."""
    missed = []
    for begin, finish in zip([start, *due_times], [*due_times, end], strict=True):
        due = begin + every
        while due + grace < finish and len(missed) < MAX_DUE_TIMES:
            missed.append(due)
            due += every
    return missed


def schedules_punctuality(
    tasks: list[PeriodicTask] | None = None, *, now: datetime | None = None, limit: int = 200
) -> list[Punctuality]:
    """``schedule_punctuality`` of ``tasks`` (every enabled schedule by name, at most ``limit``,
    by default), their recorded runs read in one query."""
    now = now or timezone.now()
    if tasks is None:
        enabled = PeriodicTask.objects.filter(enabled=True).select_related("interval", "crontab", "solar", "clocked")
        tasks = list(enabled.order_by("name")[:limit])
    since = now - timedelta(seconds=settings.SCHEDULE_PUNCTUALITY_WINDOW)
    recorded = _recorded_runs([task.name for task in tasks], since=since, until=now)
    return [schedule_punctuality(task, now=now, recorded=recorded.get(task.name, {})) for task in tasks]


def _recorded_runs(names: list[str], *, since: datetime, until: datetime) -> dict[str, dict[datetime, datetime | None]]:
    """The recorded runs of these schedules due in (``since``, ``until``]: name -> due -> sent."""
    runs: dict[str, dict[datetime, datetime | None]] = {}
    rows = ScheduledRun.objects.filter(periodic_task_name__in=names, due_at__gt=since, due_at__lte=until)
    for name, due, sent in rows.values_list("periodic_task_name", "due_at", "sent_at"):
        runs.setdefault(name, {})[due] = sent
    return runs
