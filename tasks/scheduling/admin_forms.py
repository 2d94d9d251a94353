"""Forms of the schedule admin: bad input is a form error with a message, never a 500.

JSON that is not a list or an object, an unknown task or queue, a crontab that never fires: each
is refused here, before Beat ever reads the row.
"""

from __future__ import annotations

import json
from typing import Any

from celery import current_app
from django import forms
from django.utils import timezone
from django_celery_beat.admin import PeriodicTaskForm as StockPeriodicTaskForm
from django_celery_beat.models import CrontabSchedule
from django_celery_beat.tzcrontab import TzAwareCrontab

from tasks.models import SchedulePolicy
from tasks.queues import validate_queue


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


class BackfillForm(forms.Form):
    """The window of a backfill: its runs due after ``start`` and up to ``end`` are looked at."""

    start = forms.DateTimeField(help_text="Due after this time.")
    end = forms.DateTimeField(help_text="Up to this time (not in the future).")

    def clean(self) -> dict:
        cleaned = super().clean()
        start, end = cleaned.get("start"), cleaned.get("end")
        if start and end:
            if end <= start:
                raise forms.ValidationError("The window must end after it starts.")
            if end > timezone.now():
                raise forms.ValidationError("The window cannot reach into the future: Beat sends those runs.")
        return cleaned
