"""Admin for dead letters, the outbox and deliveries.

A failed task is found and requeued in two clicks: open it from the dead letters list, press
**Requeue**. The list's actions requeue or discard a selection, "select all" included, so a
whole filtered set goes at once.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html
from django_celery_results.admin import TaskResultAdmin as StockTaskResultAdmin

from tasks.admin_mixins import ReadOnlyAdminMixin, pretty_json
from tasks.messaging.deliveries import DispatchError
from tasks.messaging.queue_pauses import queue_pause, queue_resume
from tasks.models import DeadLetter, Delivery, Outbox, QueuePause
from tasks.queues import QUEUES
from tasks.reliability.dead_letters import (
    Requeued,
    dead_letter_requeue,
    dead_letters_discard,
    dead_letters_of,
    dead_letters_requeue_report,
)
from tasks.reliability.delivery_state import deliveries_cancel, deliveries_due_now
from tasks.reliability.jobs_view import (
    CreatedFilter,
    DoneFilter,
    HandlerFilter,
    QueueFilter,
    ScheduleFilter,
    TaskNameFilter,
    TaskStateFilter,
    deliveries_search,
)


class DeadLetterAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("id", "task_name", "handler", "reason", "exception_type", "attempts", "last_failed_at", "status")
    list_display_links = ("id", "task_name")
    list_filter = ("status", "reason", "task_name", "queue", "last_failed_at")
    search_fields = ("task_name", "task_id", "handler", "message_type", "=message_id", "exception_message")
    date_hierarchy = "last_failed_at"
    actions = ("requeue_dead_letters", "discard_dead_letters")
    change_form_template = "admin/tasks/deadletter/change_form.html"
    fields = (
        "status",
        "task_name",
        "task_id",
        "queue",
        "handler",
        "message_type",
        "message_id",
        "reason",
        "exception_type",
        "exception_message",
        "traceback_display",
        "payload_display",
        "args_display",
        "kwargs_display",
        "attempts",
        "first_failed_at",
        "last_failed_at",
        "requeued_at",
        "requeue_count",
    )
    readonly_fields = fields

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        # Viewing is what the change page is for here; requeue and discard are its buttons.
        return request.user.has_perm("tasks.change_deadletter")

    @admin.display(description="traceback")
    def traceback_display(self, obj: DeadLetter) -> str:
        return format_html("<pre style='white-space: pre-wrap'>{}</pre>", obj.traceback or "-")

    @admin.display(description="message payload")
    def payload_display(self, obj: DeadLetter) -> str:
        return pretty_json(obj.payload) if obj.payload is not None else "-"

    @admin.display(description="args")
    def args_display(self, obj: DeadLetter) -> str:
        return pretty_json(obj.args)

    @admin.display(description="kwargs")
    def kwargs_display(self, obj: DeadLetter) -> str:
        return pretty_json(obj.kwargs)

    @admin.action(description="Requeue selected dead letters", permissions=["change"])
    def requeue_dead_letters(self, request: HttpRequest, queryset) -> None:
        try:
            counts = dead_letters_requeue_report(dead_letters=queryset)
        except DispatchError as exc:
            self.message_user(request, f"The broker is unavailable, nothing more was requeued: {exc}", messages.ERROR)
            return
        text = f"Requeued {counts[Requeued.SENT]} dead letter(s)."
        if counts[Requeued.RESOLVED]:
            text += f" {counts[Requeued.RESOLVED]} resolved: their delivery was done already, nothing sent."
        if counts[Requeued.SKIPPED]:
            text += f" {counts[Requeued.SKIPPED]} skipped: requeued or discarded meanwhile."
        self.message_user(request, text, messages.SUCCESS)

    @admin.action(description="Discard selected dead letters", permissions=["change"])
    def discard_dead_letters(self, request: HttpRequest, queryset) -> None:
        count = dead_letters_discard(dead_letters=queryset)
        self.message_user(request, f"Discarded {count} dead letter(s).", messages.SUCCESS)

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        if request.method == "POST" and ("_requeue" in request.POST or "_discard" in request.POST):
            return self._act_on_one(request, object_id)
        return super().change_view(request, object_id, form_url, extra_context)

    def _act_on_one(self, request: HttpRequest, object_id: str) -> HttpResponseRedirect:
        dead_letter = self.get_object(request, object_id)
        if dead_letter is None or not self.has_change_permission(request, dead_letter):
            self.message_user(request, "No such dead letter, or no permission.", messages.ERROR)
            return HttpResponseRedirect(reverse("admin:tasks_deadletter_changelist"))
        if "_discard" in request.POST:
            dead_letters_discard(dead_letters=DeadLetter.objects.filter(pk=dead_letter.pk))
            self.message_user(request, f"Discarded dead letter {dead_letter.pk}.", messages.SUCCESS)
        else:
            # Locked and re-checked inside: another admin may have acted since this page loaded.
            try:
                outcome = dead_letter_requeue(dead_letter=dead_letter.pk)
            except DispatchError as exc:
                self.message_user(request, f"The broker is unavailable; try again: {exc}", messages.ERROR)
            else:
                self._report_one(request, dead_letter.pk, outcome)
        return HttpResponseRedirect(reverse("admin:tasks_deadletter_change", args=[dead_letter.pk]))

    def _report_one(self, request: HttpRequest, pk: int, outcome: Requeued) -> None:
        if outcome == Requeued.SENT:
            self.message_user(request, f"Requeued dead letter {pk}.", messages.SUCCESS)
        elif outcome == Requeued.RESOLVED:
            self.message_user(request, f"Dead letter {pk} resolved: its delivery was done already.", messages.INFO)
        else:
            status = DeadLetter.objects.filter(pk=pk).values_list("status", flat=True).first()
            self.message_user(request, f"Dead letter {pk} is {status}: not requeued.", messages.WARNING)


class OutboxAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("id", "message_type", "message_id", "created_at", "sent_at", "attempts")
    list_filter = (("sent_at", admin.EmptyFieldListFilter), "message_type")
    search_fields = ("=message_id", "message_type")
    readonly_fields = (
        "message_id",
        "message_type",
        "payload_display",
        "created_at",
        "sent_at",
        "attempts",
        "last_error",
    )
    fields = readonly_fields

    @admin.display(description="payload")
    def payload_display(self, obj: Outbox) -> str:
        return pretty_json(obj.payload)


class DeliveryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """The jobs view: every event delivery and Django task run, found among millions by status,
    handler, queue and time (``tasks.reliability.jobs_view``), or searched by id, message or task
    id and the words of its arguments; the actions apply to the whole filtered selection ("select
    all"), each in set-based statements."""

    list_display = (
        "id",
        "handler",
        "message_type",
        "queue",
        "status",
        "run_after",
        "attempts",
        "send_count",
        "created_at",
    )
    list_filter = ("status", QueueFilter, HandlerFilter, CreatedFilter)
    search_fields = ("message_id",)  # shows the search box; deliveries_search does the searching
    search_help_text = "A delivery id, a message or task id, or words of the arguments."
    ordering = ("-id",)
    # The paginator counts the filtered rows; a second count of the whole table is not needed.
    show_full_result_count = False
    actions = ("cancel_deliveries", "requeue_dead_deliveries", "run_delayed_now")
    readonly_fields = (
        "message_id",
        "handler",
        "message_type",
        "queue",
        "priority",
        "status",
        "run_after",
        "task_id",
        "sent_at",
        "send_count",
        "unfinished_starts",
        "attempts",
        "created_at",
        "completed_at",
        "rate_key",
        "concurrency_key",
        "payload_display",
    )
    fields = readonly_fields

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        # Rows are never edited; the permission is what the actions ask for.
        return request.user.has_perm("tasks.change_delivery")

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        return deliveries_search(queryset, search_term), False

    @admin.action(
        description="Cancel selected deliveries (delayed, waiting or queued, not started)", permissions=["change"]
    )
    def cancel_deliveries(self, request: HttpRequest, queryset) -> None:
        selected = queryset.count()
        cancelled = deliveries_cancel(deliveries=queryset)
        text = f"Cancelled {cancelled} delivery(ies)."
        if selected > cancelled:
            text += f" {selected - cancelled} left as they were: running, finished or cancelled already."
        self.message_user(request, text, messages.SUCCESS)

    @admin.action(description="Requeue selected dead deliveries", permissions=["change"])
    def requeue_dead_deliveries(self, request: HttpRequest, queryset) -> None:
        counts = dead_letters_requeue_report(dead_letters=dead_letters_of(deliveries=queryset))
        self.message_user(
            request,
            f"Requeued {counts[Requeued.SENT]} dead delivery(ies); {counts[Requeued.RESOLVED]} were done already. "
            "Only dead ones are requeued.",
            messages.SUCCESS,
        )

    @admin.action(description="Run selected delayed deliveries now", permissions=["change"])
    def run_delayed_now(self, request: HttpRequest, queryset) -> None:
        moved = deliveries_due_now(deliveries=queryset)
        self.message_user(
            request,
            f"{moved} delayed delivery(ies) are due now: the relay sends them on its next pass.",
            messages.SUCCESS,
        )

    @admin.display(description="payload")
    def payload_display(self, obj: Delivery) -> str:
        return pretty_json(obj.payload)


class TaskResultAdmin(StockTaskResultAdmin):
    """Celery's task results, found among millions: status, task and finish-time filters that
    read no distinct values from the table, and search by task id (its unique index). The
    platform's deliveries are searched by their arguments in the Deliveries list."""

    date_hierarchy = None  # its drill-down reads every distinct date of the table
    list_filter = (TaskStateFilter, TaskNameFilter, ScheduleFilter, DoneFilter)
    search_fields = ("task_id",)
    search_help_text = "A task id."
    show_full_result_count = False

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        term = search_term.strip()
        return (queryset.filter(task_id=term) if term else queryset), False


class QueuePauseForm(forms.ModelForm):
    queue = forms.ChoiceField(choices=[(q, q) for q in QUEUES])

    class Meta:
        model = QueuePause
        fields = ("queue", "reason")


class QueuePauseAdmin(admin.ModelAdmin):
    """Paused queues: **Add** pauses one (workers stop consuming it within seconds), the
    **Resume** action resumes a selection. Its messages wait in the broker meanwhile."""

    form = QueuePauseForm
    list_display = ("queue", "paused_at", "paused_by", "reason")
    actions = ("resume_queues",)

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def get_actions(self, request: HttpRequest) -> dict:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # resuming is the Resume action's
        return actions

    def save_model(self, request: HttpRequest, obj: QueuePause, form: forms.Form, change: bool) -> None:
        if not queue_pause(queue=obj.queue, by=request.user.get_username(), reason=obj.reason):
            self.message_user(request, f"Queue {obj.queue} was paused already.", messages.WARNING)

    def delete_model(self, request: HttpRequest, obj: QueuePause) -> None:
        queue_resume(queue=obj.queue)

    @admin.action(description="Resume selected queues", permissions=["delete"])
    def resume_queues(self, request: HttpRequest, queryset) -> None:
        resumed = [pause.queue for pause in queryset if queue_resume(queue=pause.queue)]
        self.message_user(request, f"Resumed: {', '.join(resumed) or 'none'}.", messages.SUCCESS)
