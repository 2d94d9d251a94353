"""Admin for schedules: django-celery-beat's PeriodicTask admin, replaced by one operators can run.

On the list: last run (time, status, duration, linked to its task results), next run, a
**Run now** action. On the page: the task chosen from the registered tasks, the misfire
and overlap policy inline, the runs and the history of the schedule. Bad input (JSON that
is not a list or an object, an unknown task or queue, a crontab that never fires) is a
form error, never a 500. Every change made here is recorded with the admin user.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from celery import current_app
from django import forms
from django.contrib import admin, messages
from django.db.models import F, OuterRef, QuerySet, Subquery
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django_celery_beat.admin import CrontabScheduleAdmin as StockCrontabScheduleAdmin
from django_celery_beat.admin import PeriodicTaskAdmin as StockPeriodicTaskAdmin
from django_celery_beat.admin import PeriodicTaskForm as StockPeriodicTaskForm
from django_celery_beat.models import CrontabSchedule, PeriodicTask, PeriodicTasks
from django_celery_beat.tzcrontab import TzAwareCrontab
from django_celery_results.models import TaskResult

from tasks.models import ScheduleChange, SchedulePolicy
from tasks.queues import validate_queue
from tasks.schedule_history import schedule_change_context, schedule_change_record
from tasks.schedules import periodic_task_run_now, schedule_due_at

HISTORY_ROWS_ON_PAGE = 20


def _crontab_error(**fields: Any) -> str:
    """Why this crontab cannot be scheduled, or "" when Celery accepts it."""
    try:
        cron = TzAwareCrontab(**fields)
        cron.remaining_estimate(timezone.now())
    except Exception as exc:  # Celery raises ValueError, RuntimeError or its own parse errors
        return f"This crontab cannot be scheduled: {exc}"
    return ""


class PeriodicTaskForm(StockPeriodicTaskForm):
    """The stock form, plus checks of everything Beat would otherwise fail on at run time."""

    def _clean_json_of(self, field: str, kind: type, kind_name: str) -> str:
        value = self.cleaned_data.get(field) or ("[]" if kind is list else "{}")
        try:
            parsed = json.loads(value)
        except ValueError as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc}") from exc
        if not isinstance(parsed, kind):
            raise forms.ValidationError(f"Must be a JSON {kind_name}, e.g. {'[1, 2]' if kind is list else '{}'}.")
        return value

    def clean_args(self) -> str:
        return self._clean_json_of("args", list, "list")

    def clean_kwargs(self) -> str:
        return self._clean_json_of("kwargs", dict, "object")

    def clean_headers(self) -> str:
        return self._clean_json_of("headers", dict, "object")

    def clean_queue(self) -> str | None:
        queue = self.cleaned_data.get("queue") or None
        if queue is not None:
            try:
                validate_queue(queue)
            except ValueError as exc:
                raise forms.ValidationError(str(exc)) from exc
        return queue

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        task = data.get("task")
        if task:
            current_app.loader.import_default_modules()
            if task not in current_app.tasks:
                self.add_error("regtask" if data.get("regtask") else "task", f"No task named {task!r} is registered.")
            elif "args" in data and "kwargs" in data:
                self._check_arguments(current_app.tasks[task], data)
        crontab = data.get("crontab")
        if crontab is not None:
            error = _crontab_error(
                minute=crontab.minute,
                hour=crontab.hour,
                day_of_week=crontab.day_of_week,
                day_of_month=crontab.day_of_month,
                month_of_year=crontab.month_of_year,
                tz=crontab.timezone,
            )
            if error:
                self.add_error("crontab", error)
        return data

    def _check_arguments(self, task: Any, data: dict[str, Any]) -> None:
        # Celery checks the arguments against the task's signature when Beat sends it; a
        # mismatch would fail on every run, so it is refused here.
        check = getattr(task, "__header__", None)
        if check is None or not getattr(task, "typing", True):
            return
        try:
            check(*json.loads(data["args"]), **json.loads(data["kwargs"]))
        except TypeError as exc:
            self.add_error("kwargs", f"The task does not take these arguments: {exc}")


class CrontabScheduleForm(forms.ModelForm):
    """Each field is checked by django-celery-beat; this checks that they can occur together."""

    class Meta:
        model = CrontabSchedule
        fields = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year", "timezone")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        names = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year")
        if not self.errors and all(data.get(name) not in (None, "") for name in names):
            error = _crontab_error(**{name: data[name] for name in names}, tz=data.get("timezone"))
            if error:
                raise forms.ValidationError(error)
        return data


class SchedulePolicyForm(forms.ModelForm):
    class Meta:
        model = SchedulePolicy
        fields = ("misfire", "overlap")

    def has_changed(self) -> bool:
        # Store the policy with every new schedule, defaults included, so it is explicit.
        return self.instance.pk is None or super().has_changed()


class SchedulePolicyInline(admin.StackedInline):
    model = SchedulePolicy
    form = SchedulePolicyForm
    can_delete = False
    extra = 1
    max_num = 1
    verbose_name = "policy"
    verbose_name_plural = "misfire and overlap policy"


class _RecordedChanges:
    """Runs each admin view inside a schedule change context naming the admin user."""

    def changeform_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        with schedule_change_context(user=request.user, source="admin"):
            return super().changeform_view(request, *args, **kwargs)

    def delete_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        with schedule_change_context(user=request.user, source="admin"):
            return super().delete_view(request, *args, **kwargs)

    def changelist_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        with schedule_change_context(user=request.user, source="admin"):
            return super().changelist_view(request, *args, **kwargs)


def _last_result(field: str) -> Subquery:
    latest = TaskResult.objects.filter(periodic_task_name=OuterRef("name")).order_by("-date_created")
    return Subquery(latest.values(field)[:1])


def _describe_changes(changes: Any) -> str:
    if not isinstance(changes, dict):
        return str(changes)
    parts = []
    for field, values in changes.items():
        if isinstance(values, list | tuple) and len(values) == 2:
            parts.append(f"{field}: {values[0]!r} → {values[1]!r}")
        else:
            parts.append(f"{field}: {values!r}")
    return "; ".join(parts)


class PeriodicTaskAdmin(_RecordedChanges, StockPeriodicTaskAdmin):
    """Schedules with their runs, next run, Run now, policies and history."""

    form = PeriodicTaskForm
    inlines = [SchedulePolicyInline]
    list_display = (
        "name",
        "enabled",
        "task",
        "scheduler",
        "last_run",
        "last_status",
        "last_duration",
        "next_run",
        "runs_link",
    )
    list_filter = ["enabled", "one_off", "task", "queue"]
    actions = ("run_now", "enable_tasks", "disable_tasks", "toggle_tasks")
    readonly_fields = (
        "last_run_at",
        "crontab_translation",
        "total_run_count_display",
        "run_now_button",
        "runs_link",
        "change_history",
    )
    fieldsets = (
        *StockPeriodicTaskAdmin.fieldsets,
        ("Runs and history", {"fields": ("total_run_count_display", "run_now_button", "runs_link", "change_history")}),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[PeriodicTask]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                last_result_status=_last_result("status"),
                last_result_created=_last_result("date_created"),
                last_result_started=_last_result("date_started"),
                last_result_done=_last_result("date_done"),
            )
        )

    @admin.display(description="Last run", ordering=F("last_run_at").desc(nulls_last=True))
    def last_run(self, obj: PeriodicTask) -> Any:
        return obj.last_run_at or getattr(obj, "last_result_created", None) or "never"

    @admin.display(description="Last status")
    def last_status(self, obj: PeriodicTask) -> str:
        return getattr(obj, "last_result_status", None) or "—"

    @admin.display(description="Duration")
    def last_duration(self, obj: PeriodicTask) -> str:
        started = getattr(obj, "last_result_started", None) or getattr(obj, "last_result_created", None)
        done = getattr(obj, "last_result_done", None)
        status = getattr(obj, "last_result_status", None)
        if not started:
            return "—"
        if status in ("STARTED", "RETRY"):
            return f"running for {(timezone.now() - started).total_seconds():.0f} s"
        if not done:
            return "—"
        return f"{max((done - started).total_seconds(), 0):.2f} s"

    @admin.display(description="Next run")
    def next_run(self, obj: PeriodicTask) -> Any:
        if not obj.enabled or (obj.one_off and obj.total_run_count):
            return "—"
        try:
            due = schedule_due_at(obj.schedule, obj.last_run_at or obj.date_changed or timezone.now())
        except Exception:  # a schedule Celery cannot evaluate shows as unknown, not as a 500
            return "unknown"
        return max(due, timezone.now()) if obj.start_time is None else max(due, obj.start_time)

    @admin.display(description="Runs")
    def runs_link(self, obj: PeriodicTask) -> str:
        if obj.pk is None:
            return "—"
        url = reverse("admin:django_celery_results_taskresult_changelist")
        return format_html('<a href="{}?{}">runs</a>', url, urlencode({"periodic_task_name": obj.name}))

    @admin.display(description="Total runs sent")
    def total_run_count_display(self, obj: PeriodicTask) -> int:
        return obj.total_run_count

    @admin.display(description="Run now")
    def run_now_button(self, obj: PeriodicTask) -> str:
        if obj.pk is None:
            return "—"
        return format_html('<input type="submit" name="_run_now" value="{}">', "Save and run now")

    def response_change(self, request: HttpRequest, obj: PeriodicTask) -> HttpResponse:
        if "_run_now" in request.POST:
            self.run_now(request, PeriodicTask.objects.filter(pk=obj.pk))
            return HttpResponseRedirect(request.path)
        return super().response_change(request, obj)

    @admin.display(description="History")
    def change_history(self, obj: PeriodicTask) -> str:
        if obj.pk is None:
            return "—"
        changes = ScheduleChange.objects.filter(periodic_task_id=obj.pk).select_related("user")
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            (
                (
                    timezone.localtime(change.at).strftime("%Y-%m-%d %H:%M:%S"),
                    change.action,
                    change.user or "—",
                    change.source,
                    _describe_changes(change.changes),
                )
                for change in changes[:HISTORY_ROWS_ON_PAGE]
            ),
        )
        url = reverse("admin:tasks_schedulechange_changelist")
        return format_html(
            "<table><thead><tr><th>at</th><th>action</th><th>user</th><th>source</th><th>changes</th></tr>"
            '</thead><tbody>{}</tbody></table><p><a href="{}?{}">all changes</a></p>',
            rows,
            url,
            urlencode({"periodic_task_id": obj.pk}),
        )

    @admin.action(description="Run now")
    def run_now(self, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> None:
        sent, failed = [], []
        for periodic_task in queryset:
            try:
                periodic_task_run_now(periodic_task=periodic_task)
            except Exception as exc:  # the broker is down, or the task unknown: say so, do not 500
                failed.append(f"{periodic_task.name} ({exc})")
            else:
                sent.append(periodic_task.name)
        if sent:
            self.message_user(request, f"Sent now: {', '.join(sent)}.", messages.SUCCESS)
        if failed:
            self.message_user(request, f"Could not send: {', '.join(failed)}.", messages.ERROR)

    def _bulk_update(self, request: HttpRequest, queryset: QuerySet[PeriodicTask], verb: str, **fields: Any) -> None:
        # update() sends no signals, so the history and Beat's incremental reload are told here.
        before = {task.pk: (task.name, task.enabled) for task in queryset}
        if not before:
            return
        queryset.update(date_changed=timezone.now(), **fields)
        PeriodicTasks.update_changed()
        after = dict(PeriodicTask.objects.filter(pk__in=before).values_list("pk", "enabled"))
        for pk, (name, enabled) in before.items():
            if after.get(pk, enabled) != enabled:
                schedule_change_record(
                    periodic_task_id=pk,
                    periodic_task_name=name,
                    action=ScheduleChange.Action.CHANGED,
                    changes={"enabled": [enabled, after[pk]]},
                )
        self.message_user(request, f"{len(before)} schedule(s) {verb}.", messages.SUCCESS)

    @admin.action(description="Enable selected tasks")
    def enable_tasks(self, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> None:
        self._bulk_update(request, queryset, "enabled", enabled=True)

    @admin.action(description="Disable selected tasks")
    def disable_tasks(self, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> None:
        self._bulk_update(request, queryset, "disabled", enabled=False, last_run_at=None)

    @admin.action(description="Toggle activity of selected tasks")
    def toggle_tasks(self, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> None:
        enabled = list(queryset.filter(enabled=True).values_list("pk", flat=True))
        disabled = list(queryset.filter(enabled=False).values_list("pk", flat=True))
        self._bulk_update(request, PeriodicTask.objects.filter(pk__in=enabled), "disabled", enabled=False)
        self._bulk_update(request, PeriodicTask.objects.filter(pk__in=disabled), "enabled", enabled=True)


class CrontabScheduleAdmin(StockCrontabScheduleAdmin):
    form = CrontabScheduleForm


@admin.register(ScheduleChange)
class ScheduleChangeAdmin(admin.ModelAdmin):
    """Read-only history of every schedule."""

    list_display = ("at", "periodic_task_name", "action", "user", "source", "changes")
    list_filter = ("action", "source")
    search_fields = ("periodic_task_name",)
    date_hierarchy = "at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


admin.site.unregister(PeriodicTask)
admin.site.register(PeriodicTask, PeriodicTaskAdmin)
admin.site.unregister(CrontabSchedule)
admin.site.register(CrontabSchedule, CrontabScheduleAdmin)
