"""Admin for Django task runs: each run by its task's name, with its status and timestamps."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import HttpRequest
from django.utils.html import format_html

from tasks.admin_mixins import ReadOnlyAdminMixin, pretty_json
from tasks.django_tasks.message import RUN_HANDLER
from tasks.django_tasks.results import STATUS_OF_DELIVERY
from tasks.models import Delivery, TaskRun


class TaskRunAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("result_id", "task_path", "status", "queue", "priority", "attempts", "enqueued_at", "finished_at")
    list_filter = ("queue", "task_path", "enqueued_at")
    search_fields = ("=result_id", "task_path")
    date_hierarchy = "enqueued_at"
    fields = (
        "result_id",
        "task_path",
        "status",
        "backend",
        "queue",
        "priority",
        "args_display",
        "kwargs_display",
        "run_after",
        "enqueued_at",
        "started_at",
        "last_attempted_at",
        "finished_at",
        "worker_ids",
        "errors_display",
        "return_value_display",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[TaskRun]:
        delivery = Delivery.objects.filter(message_id=OuterRef("result_id"), handler=RUN_HANDLER)
        return super().get_queryset(request).annotate(delivery_status=Subquery(delivery.values("status")[:1]))

    @admin.display(description="status")
    def status(self, obj: TaskRun) -> str:
        return STATUS_OF_DELIVERY[obj.delivery_status].label if obj.delivery_status else "Ready"

    @admin.display(description="attempts")
    def attempts(self, obj: TaskRun) -> int:
        return len(obj.worker_ids)

    @admin.display(description="args")
    def args_display(self, obj: TaskRun) -> str:
        return pretty_json(obj.args)

    @admin.display(description="kwargs")
    def kwargs_display(self, obj: TaskRun) -> str:
        return pretty_json(obj.kwargs)

    @admin.display(description="return value")
    def return_value_display(self, obj: TaskRun) -> str:
        return pretty_json(obj.return_value)

    @admin.display(description="errors")
    def errors_display(self, obj: TaskRun) -> str:
        return format_html(
            "<pre style='white-space: pre-wrap'>{}</pre>",
            "\n\n".join(f"{e['exception_class_path']}\n{e['traceback']}" for e in obj.errors),
        )
