"""Admin for schedules: django-celery-beat's PeriodicTask admin, replaced by one operators can run.

On the list: last run (time, status, duration, linked to its task results), next run,
punctuality (on time, late or missed runs, ``tasks.scheduling.punctuality``), a **Run now**
action and a **Backfill** action (the runs of a chosen window that were never sent). On the
page: the task chosen from the registered tasks, the misfire
and overlap policy inline, the runs and the history of the schedule. Bad input (JSON that
is not a list or an object, an unknown task or queue, a crontab that never fires) is a
form error, never a 500. Every change made here is recorded with the admin user.

Acting needs django-celery-beat's change permission on periodic tasks: Run now, Save and run
now, enable, disable and toggle (a user with the view permission only sees the schedules).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.db.models import F, OuterRef, QuerySet, Subquery
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django_celery_beat.admin import CrontabScheduleAdmin as StockCrontabScheduleAdmin
from django_celery_beat.admin import PeriodicTaskAdmin as StockPeriodicTaskAdmin
from django_celery_beat.models import PeriodicTask, PeriodicTasks
from django_celery_results.models import TaskResult

from tasks.admin_mixins import ReadOnlyAdminMixin
from tasks.models import ScheduleChange, SchedulePolicy
from tasks.scheduling.admin_forms import BackfillForm, CrontabScheduleForm, PeriodicTaskForm, SchedulePolicyForm
from tasks.scheduling.backfill import schedule_backfill
from tasks.scheduling.declared import periodic_task_run_now
from tasks.scheduling.history import schedule_change_context, schedule_change_record
from tasks.scheduling.next_run import NextRunUnknown, periodic_task_next_run
from tasks.scheduling.punctuality import schedule_punctuality

HISTORY_ROWS_ON_PAGE = 20


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
        "punctuality",
        "runs_link",
    )
    list_filter = ["enabled", "one_off", "task", "queue"]
    actions = ("run_now", "backfill_runs", "enable_tasks", "disable_tasks", "toggle_tasks")
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
        try:
            return periodic_task_next_run(obj) or "—"
        except NextRunUnknown:  # shown as unknown, not as a 500
            return "unknown"

    @admin.display(description="Punctuality")
    def punctuality(self, obj: PeriodicTask) -> str:
        return schedule_punctuality(obj).summary

    @admin.display(description="Runs")
    def runs_link(self, obj: PeriodicTask) -> str:
        if obj.pk is None:
            return "—"
        url = reverse("admin:django_celery_results_taskresult_changelist")
        return format_html('<a href="{}?{}">runs</a>', url, urlencode({"periodic_task_name": obj.name}))

    @admin.display(description="Total runs sent")
    def total_run_count_display(self, obj: PeriodicTask) -> int:
        return obj.total_run_count

    def get_fieldsets(self, request: HttpRequest, obj: PeriodicTask | None = None) -> Any:
        if self.has_change_permission(request, obj):
            return super().get_fieldsets(request, obj)
        # A user who may only look gets no "Save and run now" button.
        return [
            (name, {**options, "fields": tuple(f for f in options["fields"] if f != "run_now_button")})
            for name, options in super().get_fieldsets(request, obj)
        ]

    @admin.display(description="Run now")
    def run_now_button(self, obj: PeriodicTask) -> str:
        if obj.pk is None:
            return "—"
        return format_html('<input type="submit" name="_run_now" value="{}">', "Save and run now")

    def response_change(self, request: HttpRequest, obj: PeriodicTask) -> HttpResponse:
        # Only a user with the change permission reaches this (Django refuses the POST otherwise);
        # checked again so the rule holds if that ever changes.
        if "_run_now" in request.POST and self.has_change_permission(request, obj):
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

    @admin.action(description="Run now", permissions=["change"])
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

    @admin.action(description="Backfill missed runs of a time window", permissions=["change"])
    def backfill_runs(self, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> HttpResponse | None:
        form = BackfillForm(request.POST if "apply" in request.POST else None)
        if not form.is_valid():
            context = {
                **self.admin_site.each_context(request),
                "form": form,
                "queryset": queryset,
                "time_zone": timezone.get_current_timezone_name(),
                "title": "Backfill runs",
            }
            return TemplateResponse(request, "admin/django_celery_beat/periodictask/backfill.html", context)
        start, end = form.cleaned_data["start"], form.cleaned_data["end"]
        for periodic_task in queryset:
            try:
                outcome = schedule_backfill(task=periodic_task, start=start, end=end)
            except Exception as exc:  # a schedule that cannot be evaluated, a window too long: say so
                self.message_user(request, f"{periodic_task.name}: not backfilled: {exc}", messages.ERROR)
                continue
            text = f"{periodic_task.name}: sent {len(outcome.sent)} run(s)"
            if outcome.unsent:
                text += f", {len(outcome.unsent)} recorded for the relay (the broker refused them)"
            if outcome.skipped:
                text += f", skipped {outcome.skipped}: {outcome.reason}"
            self.message_user(request, text + ".", messages.SUCCESS)
        return None

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

    @admin.action(description="Enable selected tasks", permissions=["change"])
    def enable_tasks(self, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> None:
        self._bulk_update(request, queryset, "enabled", enabled=True)

    @admin.action(description="Disable selected tasks", permissions=["change"])
    def disable_tasks(self, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> None:
        self._bulk_update(request, queryset, "disabled", enabled=False, last_run_at=None)

    @admin.action(description="Toggle activity of selected tasks", permissions=["change"])
    def toggle_tasks(self, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> None:
        enabled = list(queryset.filter(enabled=True).values_list("pk", flat=True))
        disabled = list(queryset.filter(enabled=False).values_list("pk", flat=True))
        self._bulk_update(request, PeriodicTask.objects.filter(pk__in=enabled), "disabled", enabled=False)
        self._bulk_update(request, PeriodicTask.objects.filter(pk__in=disabled), "enabled", enabled=True)


class CrontabScheduleAdmin(StockCrontabScheduleAdmin):
    form = CrontabScheduleForm


class ScheduleChangeAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Read-only history of every schedule."""

    list_display = ("at", "periodic_task_name", "action", "user", "source", "changes")
    list_filter = ("action", "source")
    search_fields = ("periodic_task_name",)
    date_hierarchy = "at"

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
