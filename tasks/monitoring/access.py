"""Who may read monitoring data: the metrics token, or a staff user with the monitoring permission.

The permission is ``tasks.view_deadletter``, Django's view permission on dead letters. The
dead letters are the most sensitive thing these screens show (handlers, exceptions; payloads
and tracebacks one click away), so whoever may read them may read the platform's aggregates
too, and whoever may not sees none of it: /metrics, the details of /health/ready and the
platform status page ask the same question here.
"""

from __future__ import annotations

import enum
import hmac
from typing import Any

from django.conf import settings
from django.http import HttpRequest

MONITORING_PERMISSION = "tasks.view_deadletter"


class Access(enum.Enum):
    """What a request's credentials allow."""

    READER = enum.auto()  # the metrics token, or a staff session with the permission
    NO_CREDENTIALS = enum.auto()  # anonymous: no bearer token, no session
    WRONG_TOKEN = enum.auto()  # a bearer token that is not METRICS_TOKEN
    NOT_ALLOWED = enum.auto()  # logged in, but not staff or without the permission


def can_read_monitoring(user: Any) -> bool:
    """An active staff user holding ``MONITORING_PERMISSION`` (superusers hold every permission)."""
    return bool(user.is_active and user.is_staff and user.has_perm(MONITORING_PERMISSION))


def bearer_token(request: HttpRequest) -> str | None:
    """The ``Authorization: Bearer`` token, or None when none (or an empty one) was sent."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def monitoring_access(request: HttpRequest) -> Access:
    """What this request may read: a bearer token decides alone; otherwise the session does."""
    token = bearer_token(request)
    if token is not None:
        expected = settings.METRICS_TOKEN
        if expected and hmac.compare_digest(token.encode(), expected.encode()):
            return Access.READER
        return Access.WRONG_TOKEN
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return Access.NO_CREDENTIALS
    return Access.READER if can_read_monitoring(user) else Access.NOT_ALLOWED
