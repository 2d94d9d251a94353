"""Monitoring fixtures: a fresh readiness report per test, and monitoring users by permission."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission

from tasks.monitoring.report_cache import readiness_reports

METRICS_TOKEN = "metrics-token-for-tests"


@pytest.fixture(autouse=True)
def fresh_readiness_report(settings):
    """No report carried over from another test; no caching unless a test asks for it."""
    settings.HEALTH_REPORT_CACHE_SECONDS = 0
    readiness_reports.clear()
    yield
    readiness_reports.clear()


@pytest.fixture
def metrics_token(settings) -> str:
    settings.METRICS_TOKEN = METRICS_TOKEN
    return METRICS_TOKEN


@pytest.fixture
def staff_with(django_user_model):
    """A staff user holding exactly the permissions named ``app_label.codename``."""

    def create(*permissions: str):
        user = django_user_model.objects.create_user(f"staff{django_user_model.objects.count()}", is_staff=True)
        for permission in permissions:
            app_label, codename = permission.split(".")
            user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
        return user

    return create
