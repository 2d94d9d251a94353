"""The admin's platform status page: one screen with workers, queues, Beat, outbox, dead letters,
recent failures, schedules and tasks per minute. Staff with the monitoring permission only
(``tasks.monitoring.access``, checked by the admin site); the schedules and the failures (task
results) are shown only to users who may view those models in the admin as well."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.admin import AdminSite
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.views.decorators.http import require_POST

from tasks.messaging.queue_pauses import paused_queues, queue_pause, queue_resume
from tasks.monitoring.selectors import dead_letter_subject
from tasks.monitoring.status_snapshot import take_snapshot
from tasks.queues import QUEUES
from tasks.scheduling.lease import beat_lateness

CHART_HEIGHT = 120
BAR_WIDTH = 10


def admin_url(name: str, *args: object) -> str:
    """The admin URL ``name``, or "" while the admin page does not exist (another module adds it)."""
    try:
        return reverse(f"admin:{name}", args=args)
    except NoReverseMatch:
        return ""


def chart_bars(per_minute: list[dict]) -> list[dict]:
    """SVG geometry for one bar per minute: total height, and the failed part at its foot."""
    peak = max((minute["total"] for minute in per_minute), default=0) or 1
    bars = []
    for index, minute in enumerate(per_minute):
        total = round(minute["total"] / peak * CHART_HEIGHT)
        failed = round(minute["failed"] / peak * CHART_HEIGHT)
        bars.append(
            {
                "x": index * BAR_WIDTH,
                "total_y": CHART_HEIGHT - total,
                "total_height": total,
                "failed_y": CHART_HEIGHT - failed,
                "failed_height": failed,
                "label": f"{minute['minute']:%H:%M} UTC: {minute['total']} done, {minute['failed']} failed",
            }
        )
    return bars


def platform_status(request: HttpRequest, *, site: AdminSite) -> HttpResponse:
    snapshot = take_snapshot()
    dead_letter_list = admin_url("tasks_deadletter_changelist")
    dead_letters = [
        {"row": row, "what": dead_letter_subject(row), "url": admin_url("tasks_deadletter_change", row.pk)}
        for row in snapshot.dead_letters
    ]
    context = {
        **site.each_context(request),
        "title": "Platform status",
        "snapshot": snapshot,
        "refresh_seconds": settings.STATUS_PAGE_REFRESH_SECONDS,
        "beat_max_age": settings.HEALTH_BEAT_MAX_AGE,
        "beat_late": bool(beat_lateness(snapshot.beat, max_age=settings.HEALTH_BEAT_MAX_AGE)),
        "dead_letters": dead_letters,
        "dead_letter_list_url": f"{dead_letter_list}?status__exact=dead" if dead_letter_list else "",
        "periodic_task_list_url": admin_url("django_celery_beat_periodictask_changelist"),
        "periodic_task_add_url": admin_url("django_celery_beat_periodictask_add"),
        "task_result_list_url": admin_url("django_celery_results_taskresult_changelist"),
        "outbox_list_url": admin_url("tasks_outbox_changelist"),
        "flower_url": settings.FLOWER_URL,
        "chart_bars": chart_bars(snapshot.per_minute),
        "chart_width": BAR_WIDTH * len(snapshot.per_minute),
        "chart_height": CHART_HEIGHT,
        "chart_total": sum(minute["total"] for minute in snapshot.per_minute),
        "show_schedules": request.user.has_perm("django_celery_beat.view_periodictask"),
        "show_failures": request.user.has_perm("django_celery_results.view_taskresult"),
        "paused_queues": paused_queues(),
        "can_pause": request.user.has_perm("tasks.add_queuepause"),
        "can_resume": request.user.has_perm("tasks.delete_queuepause"),
        "queue_pause_url": reverse("admin:queue_pause"),
    }
    return TemplateResponse(request, "tasks/admin/platform_status.html", context)


@require_POST
def queue_pause_view(request: HttpRequest) -> HttpResponse:
    """Pause or resume the queue named in the POST (``action`` ``pause`` or ``resume``), then back
    to the status page with what happened."""
    queue, action = request.POST.get("queue", ""), request.POST.get("action", "")
    permission = {"pause": "tasks.add_queuepause", "resume": "tasks.delete_queuepause"}.get(action)
    if permission is None or queue not in QUEUES:
        return HttpResponseBadRequest("Give action pause or resume and one of the platform's queues.")
    if not request.user.has_perm(permission):
        raise PermissionDenied(f"{action.capitalize()} needs the {permission} permission.")
    if action == "pause":
        done = queue_pause(queue=queue, by=request.user.get_username(), reason="status page")
        messages.success(request, f"Queue {queue} paused." if done else f"Queue {queue} was paused already.")
    else:
        done = queue_resume(queue=queue)
        messages.success(request, f"Queue {queue} resumed." if done else f"Queue {queue} was not paused.")
    return HttpResponseRedirect(reverse("admin:platform_status"))
