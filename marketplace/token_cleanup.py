"""Removal of expired API tokens: the service behind the ``cleanup_expired_tokens`` job."""

from __future__ import annotations

from datetime import datetime

from marketplace.models import ApiToken


def api_tokens_delete_expired(*, now: datetime | None = None) -> int:
    """Delete every API token whose expiry has passed; return how many were deleted."""
    deleted, _ = ApiToken.objects.expired(now).delete()
    return deleted
