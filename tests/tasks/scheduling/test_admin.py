"""The schedule admin: columns, Run now, runs and history, validated forms, and live edits under Beat."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask
from django_celery_results.models import TaskResult

from tasks.models import BeatHeartbeat, ScheduleChange, SchedulePolicy
from tasks.scheduling.declared import schedules_sync
from tests.support.schedule_tasks import ECHO
from tests.support.waiting import wait_until

ADD_URL = reverse("admin:django_celery_beat_periodictask_add")
LIST_URL = reverse("admin:django_celery_beat_periodictask_changelist")


def change_url(task: PeriodicTask) -> str:
    return reverse("admin:django_celery_beat_periodictask_change", args=[task.pk])


def form_data(*, policy: SchedulePolicy | None = None, **fields: str) -> dict[str, str]:
    """What the PeriodicTask admin form posts, with the policy inline."""
    data = {
        "name": "job", "regtask": "tasks.ping", "task": "", "enabled": "on", "description": "",
        "interval": "", "crontab": "", "solar": "", "clocked": "", "start_time_0": "", "start_time_1": "",
        "args": "[]", "kwargs": "{}", "expires_0": "", "expires_1": "", "expire_seconds": "",
        "queue": "", "exchange": "", "routing_key": "", "priority": "", "headers": "{}",
        "policy-TOTAL_FORMS": "1", "policy-INITIAL_FORMS": "1" if policy else "0",
        "policy-MIN_NUM_FORMS": "0", "policy-MAX_NUM_FORMS": "1",
        "policy-0-misfire": policy.misfire if policy else "run_once",
        "policy-0-overlap": policy.overlap if policy else "skip",
    }  # fmt: skip
    if policy:
        data.update({"policy-0-id": str(policy.pk), "policy-0-periodic_task": str(policy.periodic_task_id)})
    if fields.pop("enabled", "on") != "on":
        del data["enabled"]
    data.update(fields)
    return data


def every(seconds: int) -> IntervalSchedule:
    return IntervalSchedule.objects.get_or_create(every=seconds, period=IntervalSchedule.SECONDS)[0]


def errors_of(response) -> dict:
    assert response.status_code == 200, response.status_code
    return response.context["adminform"].form.errors


# --- Fast: the pages and forms -------------------------------------------------------------
@pytest.mark.django_db
def test_list_shows_last_run_status_duration_next_run_and_a_link_to_the_runs(admin_client_logged_in):
    schedules_sync()
    started = timezone.now() - timedelta(minutes=5)
    TaskResult.objects.create(
        task_id="r1", status="SUCCESS", periodic_task_name="calculate_daily_stats", task_name="x", date_started=started
    )
    TaskResult.objects.filter(task_id="r1").update(date_created=started, date_done=started + timedelta(seconds=2))

    response = admin_client_logged_in.get(LIST_URL)

    assert response.status_code == 200
    page = response.content.decode()
    for header in ("Last run", "Last status", "Duration", "Next run", "Punctuality", "Runs"):
        assert f">{header}<" in page or f">{header}</a>" in page
    assert "no runs due" in page or " missed" in page  # no Beat ran these schedules
    assert "SUCCESS" in page and "2.00 s" in page
    assert "?periodic_task_name=calculate_daily_stats" in page
    assert '<option value="run_now">Run now</option>' in page
    assert '<option value="backfill_runs">Backfill missed runs of a time window</option>' in page
    daily = PeriodicTask.objects.get(name="calculate_daily_stats")
    next_run = response.context["cl"].model_admin.next_run(daily)
    assert (next_run.hour, next_run.minute) == (2, 0) and next_run > timezone.now()


@pytest.mark.django_db
def test_the_runs_link_lists_only_that_schedules_task_results(admin_client_logged_in):
    TaskResult.objects.create(task_id="mine", status="SUCCESS", periodic_task_name="nightly")
    TaskResult.objects.create(task_id="other", status="SUCCESS", periodic_task_name="hourly")

    response = admin_client_logged_in.get(
        reverse("admin:django_celery_results_taskresult_changelist") + "?periodic_task_name=nightly"
    )

    assert response.status_code == 200
    assert [result.task_id for result in response.context["cl"].result_list] == ["mine"]


@pytest.mark.django_db
def test_adding_a_schedule_stores_its_policy_and_history_by_the_admin_user(admin_client_logged_in, superuser):
    response = admin_client_logged_in.post(
        ADD_URL, form_data(name="pinger", interval=str(every(30).pk), **{"policy-0-misfire": "skip"})
    )

    assert response.status_code == 302, errors_of(response)
    task = PeriodicTask.objects.get(name="pinger")
    assert (task.task, task.policy.misfire, task.policy.overlap) == ("tasks.ping", "skip", "skip")
    sources = set(ScheduleChange.objects.filter(periodic_task_id=task.pk).values_list("source", "user"))
    assert sources == {("admin", superuser.pk)}


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"args": "[1, 2"}, "args", "Not valid JSON"),
        ({"args": '{"a": 1}'}, "args", "Must be a JSON list"),
        ({"kwargs": "[1]"}, "kwargs", "Must be a JSON object"),
        ({"kwargs": "{'a': 1}"}, "kwargs", "Not valid JSON"),
        ({"headers": "nope"}, "headers", "Not valid JSON"),
        ({"regtask": "", "task": "no.such.task"}, "task", "No task named 'no.such.task' is registered"),
        ({"queue": "urgent"}, "queue", "Unknown queue 'urgent'"),
        ({"kwargs": '{"unexpected": 1}'}, "kwargs", "The task does not take these arguments"),
        ({"args": "[1]"}, "kwargs", "The task does not take these arguments"),
        ({"interval": ""}, "__all__", "One of clocked, interval, crontab, or solar must be set"),
    ],
)
@pytest.mark.django_db
def test_bad_input_is_a_form_error(admin_client_logged_in, fields, field, message):
    data = form_data(name="bad", **{"interval": str(every(30).pk), **fields})

    errors = errors_of(admin_client_logged_in.post(ADD_URL, data))

    assert message in " ".join(errors.get(field, [])), errors
    assert not PeriodicTask.objects.filter(name="bad").exists()


@pytest.mark.django_db
def test_a_crontab_that_never_fires_is_a_form_error_on_the_schedule_and_on_the_crontab(admin_client_logged_in):
    never = CrontabSchedule.objects.create(minute="0", hour="0", day_of_month="31", month_of_year="2")

    errors = errors_of(admin_client_logged_in.post(ADD_URL, form_data(name="bad", crontab=str(never.pk))))
    assert "cannot be scheduled" in " ".join(errors["crontab"])

    crontab_add = reverse("admin:django_celery_beat_crontabschedule_add")
    fields = {"minute": "0", "hour": "0", "day_of_week": "*", "timezone": "UTC"}
    response = admin_client_logged_in.post(crontab_add, {**fields, "day_of_month": "31", "month_of_year": "2"})
    assert "cannot be scheduled" in " ".join(errors_of(response)["__all__"])
    response = admin_client_logged_in.post(
        crontab_add, {**fields, "minute": "61", "day_of_month": "*", "month_of_year": "*"}
    )
    assert errors_of(response)["minute"]
    assert CrontabSchedule.objects.count() == 1


@pytest.mark.django_db
def test_run_now_sends_the_selected_jobs_at_once(admin_client_logged_in, redis_client):
    schedules_sync()
    daily = PeriodicTask.objects.get(name="calculate_daily_stats")

    response = admin_client_logged_in.post(
        LIST_URL, {"action": "run_now", "_selected_action": [str(daily.pk)]}, follow=True
    )

    assert "Sent now: calculate_daily_stats." in response.content.decode()
    sent = [json.loads(raw)["headers"] for raw in redis_client.lrange("low", 0, -1)]
    assert [(h["task"], h["periodic_task_name"]) for h in sent] == [
        ("marketplace.calculate_daily_stats", "calculate_daily_stats")
    ]


@pytest.mark.django_db
def test_save_and_run_now_on_the_schedule_page_saves_the_edit_and_sends_the_job(admin_client_logged_in, redis_client):
    task = PeriodicTask.objects.create(name="job", task="tasks.ping", interval=every(30))
    policy = SchedulePolicy.objects.create(periodic_task=task)
    assert 'name="_run_now"' in admin_client_logged_in.get(change_url(task)).content.decode()

    response = admin_client_logged_in.post(
        change_url(task), {**form_data(name="job", interval=str(every(60).pk), policy=policy), "_run_now": "1"}
    )

    assert response.status_code == 302 and response["Location"] == change_url(task)
    task.refresh_from_db()
    assert task.interval == every(60)
    sent = [json.loads(raw)["headers"] for raw in redis_client.lrange("default", 0, -1)]
    assert [(h["task"], h["periodic_task_name"]) for h in sent] == [("tasks.ping", "job")]


@pytest.mark.django_db
def test_disable_action_records_who_disabled_and_marks_the_row_changed(admin_client_logged_in, superuser):
    task = PeriodicTask.objects.create(name="job", task="tasks.ping", interval=every(30))
    PeriodicTask.objects.filter(pk=task.pk).update(date_changed=timezone.now() - timedelta(hours=1))

    admin_client_logged_in.post(LIST_URL, {"action": "disable_tasks", "_selected_action": [str(task.pk)]})

    task.refresh_from_db()
    assert not task.enabled
    assert timezone.now() - task.date_changed < timedelta(minutes=1)
    change = ScheduleChange.objects.get(action="changed")
    assert (change.changes, change.user, change.source) == ({"enabled": [True, False]}, superuser, "admin")


@pytest.mark.django_db
def test_change_page_shows_the_policy_inline_and_the_history_with_users(admin_client_logged_in):
    task = PeriodicTask.objects.create(name="job", task="tasks.ping", interval=every(30))
    policy = SchedulePolicy.objects.create(periodic_task=task)

    response = admin_client_logged_in.post(
        change_url(task),
        form_data(name="job", interval=str(every(60).pk), policy=policy, **{"policy-0-overlap": "allow"}),
    )
    assert response.status_code == 302, errors_of(response)

    page = admin_client_logged_in.get(change_url(task)).content.decode()
    assert 'name="policy-0-misfire"' in page
    assert "every 30 seconds" in page and "every 60 seconds" in page
    assert "policy.overlap" in page and "root" in page
    assert f"?periodic_task_id={task.pk}" in page
    history = admin_client_logged_in.get(
        reverse("admin:tasks_schedulechange_changelist") + f"?periodic_task_id={task.pk}"
    )
    assert history.status_code == 200
    assert {change.action for change in history.context["cl"].result_list} == {"created", "changed"}


@pytest.mark.django_db
def test_history_rows_written_by_hand_in_any_shape_still_render(admin_client_logged_in):
    task = PeriodicTask.objects.create(name="job", task="tasks.ping", interval=every(30))
    ScheduleChange.objects.create(periodic_task_id=task.pk, periodic_task_name="job", action="changed", changes=["odd"])
    ScheduleChange.objects.create(
        periodic_task_id=task.pk, periodic_task_name="job", action="changed", changes={"note": "by hand"}
    )

    response = admin_client_logged_in.get(change_url(task))

    assert response.status_code == 200
    assert "note: &#x27;by hand&#x27;" in response.content.decode()


# --- Permissions: acting on a schedule needs the change permission ---------------------------
@pytest.fixture
def staff_client(client, django_user_model):
    """Log in a staff user holding exactly the PeriodicTask permissions ``codenames``."""

    def login(*codenames: str):
        user = django_user_model.objects.create_user("operator", password="pw", is_staff=True)
        user.user_permissions.set(
            Permission.objects.filter(content_type__app_label="django_celery_beat", codename__in=codenames)
        )
        client.force_login(user)
        return client

    return login


@pytest.mark.parametrize("action", ["run_now", "enable_tasks", "disable_tasks", "toggle_tasks"])
@pytest.mark.django_db
def test_a_view_only_user_can_neither_see_nor_run_the_schedule_actions(staff_client, redis_client, action):
    viewer = staff_client("view_periodictask")
    enabled = action == "disable_tasks"  # each action would change this row
    task = PeriodicTask.objects.create(name="job", task="tasks.ping", interval=every(30), enabled=enabled)

    page = viewer.get(LIST_URL).content.decode()
    assert 'value="run_now"' not in page and 'value="toggle_tasks"' not in page
    viewer.post(LIST_URL, {"action": action, "_selected_action": [str(task.pk)]})

    task.refresh_from_db()
    assert task.enabled == enabled
    assert not ScheduleChange.objects.filter(action="changed").exists()
    assert redis_client.llen("default") == 0


@pytest.mark.django_db
def test_a_view_only_user_gets_no_run_now_button_and_a_403_for_save_and_run(staff_client, redis_client):
    viewer = staff_client("view_periodictask")
    task = PeriodicTask.objects.create(name="job", task="tasks.ping", interval=every(30))
    policy = SchedulePolicy.objects.create(periodic_task=task)

    page = viewer.get(change_url(task))
    assert page.status_code == 200 and 'name="_run_now"' not in page.content.decode()
    response = viewer.post(
        change_url(task), {**form_data(name="job", interval=str(every(30).pk), policy=policy), "_run_now": "1"}
    )

    assert response.status_code == 403
    assert redis_client.llen("default") == 0


@pytest.mark.django_db
def test_a_user_with_the_change_permission_runs_and_disables_schedules(staff_client, redis_client):
    operator = staff_client("view_periodictask", "change_periodictask")
    task = PeriodicTask.objects.create(name="job", task="tasks.ping", interval=every(30))

    assert 'name="_run_now"' in operator.get(change_url(task)).content.decode()
    operator.post(LIST_URL, {"action": "run_now", "_selected_action": [str(task.pk)]})
    operator.post(LIST_URL, {"action": "disable_tasks", "_selected_action": [str(task.pk)]})

    task.refresh_from_db()
    assert not task.enabled
    assert [json.loads(raw)["headers"]["periodic_task_name"] for raw in redis_client.lrange("default", 0, -1)] == [
        "job"
    ]


# --- Slow: edits reach a running Beat and worker ----------------------------------------------
def results_of(name: str):
    return TaskResult.objects.filter(periodic_task_name=name, status="SUCCESS")


@pytest.mark.slow
def test_a_schedule_created_changed_disabled_and_deleted_in_the_admin_takes_effect(
    admin_client_logged_in, start_beat, schedule_worker
):
    beat = start_beat()
    beat.wait_for_log("is now the active Beat", timeout=20)

    response = admin_client_logged_in.post(
        ADD_URL, form_data(name="echo", regtask="", task=ECHO, interval=str(every(1).pk), kwargs='{"version": 1}')
    )
    assert response.status_code == 302, errors_of(response)
    wait_until(
        lambda: results_of("echo").exists(),
        timeout=30,
        message=lambda: f"a run of the new schedule\n{beat.log()[-2000:]}",
    )

    task = PeriodicTask.objects.get(name="echo")
    policy = SchedulePolicy.objects.get(periodic_task=task)
    edit = {"regtask": "", "task": ECHO, "interval": str(every(1).pk), "policy": policy}
    response = admin_client_logged_in.post(change_url(task), form_data(name="echo", kwargs='{"version": 2}', **edit))
    assert response.status_code == 302, errors_of(response)
    wait_until(lambda: results_of("echo").filter(result__contains='"version": 2').exists(), timeout=30)

    response = admin_client_logged_in.post(change_url(task), form_data(name="echo", enabled="off", **edit))
    assert response.status_code == 302, errors_of(response)
    beat.wait_for_log("PlatformScheduler: removed echo", timeout=30)
    sent_when_disabled = len(beat.sent("echo"))
    wait_for_ticks(beat, 3)
    assert len(beat.sent("echo")) == sent_when_disabled

    response = admin_client_logged_in.post(change_url(task), form_data(name="echo", **edit))
    assert response.status_code == 302, errors_of(response)
    wait_until(lambda: len(beat.sent("echo")) > sent_when_disabled, timeout=30, message="runs again once enabled")

    response = admin_client_logged_in.post(
        reverse("admin:django_celery_beat_periodictask_delete", args=[task.pk]), {"post": "yes"}
    )
    assert response.status_code == 302
    beat.wait_for_log("PlatformScheduler: removed echo", timeout=30, count=2)
    sent_when_deleted = len(beat.sent("echo"))
    wait_for_ticks(beat, 3)
    assert len(beat.sent("echo")) == sent_when_deleted
    actions = list(ScheduleChange.objects.filter(periodic_task_name="echo").values_list("action", "source"))
    assert ("created", "admin") in actions and ("deleted", "admin") in actions


def wait_for_ticks(beat, ticks: int) -> None:
    """Let ``ticks`` more heartbeats of the active Beat pass."""

    def last_tick():
        return BeatHeartbeat.objects.values_list("last_tick_at", flat=True).get(name="beat")

    seen = [last_tick()]
    wait_until(lambda: seen.append(last_tick()) or len(set(seen)) > ticks, timeout=ticks * 3 + 5)
