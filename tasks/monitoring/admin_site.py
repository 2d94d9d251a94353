"""The admin site: Django's, plus the platform status page and links to it and Flower on the index."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, URLResolver, path

from tasks.monitoring.access import MONITORING_PERMISSION, can_read_monitoring
from tasks.monitoring.status_views import platform_status, queue_pause_view
from tasks.streams.dead_letter_views import stream_dead_letters_view


class PlatformAdminSite(admin.AdminSite):
    """``admin.site`` for the project; every ``admin.register`` lands here as usual."""

    index_template = "tasks/admin/index.html"

    def get_urls(self) -> list[URLPattern | URLResolver]:
        own = [
            path("platform-status/", self.admin_view(self.platform_status_view), name="platform_status"),
            path("stream-dead-letters/", self.admin_view(self.stream_dead_letters_view), name="stream_dead_letters"),
            path("platform-status/queues/", self.admin_view(self.queue_pause_view), name="queue_pause"),
        ]
        return own + super().get_urls()

    def each_context(self, request: HttpRequest) -> dict[str, Any]:
        return {
            **super().each_context(request),
            "flower_url": settings.FLOWER_URL,
            "can_read_monitoring": can_read_monitoring(request.user),
        }

    def platform_status_view(self, request: HttpRequest) -> HttpResponse:
        """The platform status page, for staff holding the monitoring permission (403 otherwise)."""
        if not can_read_monitoring(request.user):
            raise PermissionDenied(f"The platform status page needs the {MONITORING_PERMISSION} permission.")
        return platform_status(request, site=self)

    def queue_pause_view(self, request: HttpRequest) -> HttpResponse:
        """The status page's Pause and Resume buttons (POST); ``tasks.add_queuepause`` to pause,
        ``tasks.delete_queuepause`` to resume."""
        return queue_pause_view(request)

    def stream_dead_letters_view(self, request: HttpRequest) -> HttpResponse:
        """Dead-lettered stream entries, for staff holding the monitoring permission (403 otherwise);
        re-appending them needs ``tasks.change_deadletter`` besides."""
        if not can_read_monitoring(request.user):
            raise PermissionDenied(f"Stream dead letters need the {MONITORING_PERMISSION} permission.")
        return stream_dead_letters_view(request, site=self)
