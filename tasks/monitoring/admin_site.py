"""The admin site: Django's, plus the platform status page and links to it and Flower on the index."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, URLResolver, path

from tasks.monitoring.status_views import platform_status


class PlatformAdminSite(admin.AdminSite):
    """``admin.site`` for the project; every ``admin.register`` lands here as usual."""

    index_template = "tasks/admin/index.html"

    def get_urls(self) -> list[URLPattern | URLResolver]:
        own = [
            path("platform-status/", self.admin_view(self.platform_status_view), name="platform_status"),
        ]
        return own + super().get_urls()

    def each_context(self, request: HttpRequest) -> dict[str, Any]:
        return {**super().each_context(request), "flower_url": settings.FLOWER_URL}

    def platform_status_view(self, request: HttpRequest) -> HttpResponse:
        return platform_status(request, site=self)
