"""The admin app, with the platform's admin site as the default ``admin.site``.

Kept apart from ``tasks/admin_site.py`` (Django's documented pattern): this module is imported
while the app registry loads, so it may import nothing that touches models.
"""

from django.contrib.admin.apps import AdminConfig


class PlatformAdminConfig(AdminConfig):
    """``django.contrib.admin`` whose ``admin.site`` is ``PlatformAdminSite``."""

    default_site = "tasks.monitoring.admin_site.PlatformAdminSite"
