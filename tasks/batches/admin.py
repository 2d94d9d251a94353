"""Admin for batches: each with a progress bar (done / failed / pending of its members)."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from tasks.admin_mixins import ReadOnlyAdminMixin
from tasks.batches.completion import FINISHED_FAILED, FINISHED_OK
from tasks.models import Batch


class BatchAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("id", "name", "status", "progress", "members", "created_at", "finished_at")
    list_filter = ("status", "created_at")
    search_fields = ("name", "on_complete")
    date_hierarchy = "created_at"
    fields = (
        "name",
        "status",
        "progress",
        "members",
        "on_complete",
        "callback_result_id",
        "total",
        "done",
        "failed",
        "created_at",
        "closed_at",
        "finished_at",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[Batch]:
        # Live counts from the members (an index on batch and status), so a running batch moves.
        return (
            super()
            .get_queryset(request)
            .annotate(
                n_members=Count("members"),
                n_done=Count("members", filter=Q(members__status__in=FINISHED_OK)),
                n_failed=Count("members", filter=Q(members__status__in=FINISHED_FAILED)),
            )
        )

    @admin.display(description="progress")
    def progress(self, obj: Batch) -> str:
        total, done, failed = obj.n_members, obj.n_done, obj.n_failed
        return format_html(
            "<progress value='{}' max='{}' style='width: 12em'></progress> {} done, {} failed, {} pending of {}",
            done + failed,
            max(total, 1),
            done,
            failed,
            total - done - failed,
            total,
        )

    @admin.display(description="members")
    def members(self, obj: Batch) -> int:
        return obj.n_members
