"""Admin for batches: each with a progress bar (done / failed / pending of its members)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from tasks.admin_mixins import ReadOnlyAdminMixin
from tasks.batches.completion import FINISHED_FAILED, FINISHED_OK
from tasks.models import Batch, Delivery
from tasks.reliability.delivery_state import deliveries_cancel


class BatchAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("id", "name", "status", "progress", "members", "created_at", "finished_at")
    list_filter = ("status", "created_at")
    search_fields = ("name", "on_complete")
    date_hierarchy = "created_at"
    actions = ("cancel_members",)
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

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        # Never edited; the permission is what the cancel action asks for.
        return request.user.has_perm("tasks.change_batch")

    @admin.action(description="Cancel the unfinished members of the selected batches", permissions=["change"])
    def cancel_members(self, request: HttpRequest, queryset: QuerySet[Batch]) -> None:
        members = Delivery.objects.filter(batch__in=queryset.values("pk"))
        count = deliveries_cancel(deliveries=members)
        self.message_user(request, f"Cancelled {count} member(s) (running ones are asked to stop).", messages.SUCCESS)

    @admin.display(description="members")
    def members(self, obj: Batch) -> int:
        return obj.n_members
