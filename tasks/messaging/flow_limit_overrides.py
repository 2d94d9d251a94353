"""Flow limits and unique windows in force: the code's defaults (``subscribe_async(...,
rate_limit=, concurrency=, unique_for=)``) with the operators' overrides (``FlowLimit`` rows,
edited in the admin) on top, and the history of every override change.

Processes read the overrides at most every ``FLOW_LIMITS_REFRESH`` seconds (one query per process,
not one per job), so a change in the admin is in force on every worker within that.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from typing import Any

from django.conf import settings
from limits import RateLimitItem

from tasks.messaging.subscriptions import Subscription, rate_limit_parse
from tasks.models import FlowLimit, FlowLimitChange

logger = logging.getLogger(__name__)

NO_LIMIT = "none"
OVERRIDE_FIELDS = ("rate_limit", "concurrency", "unique_for", "reason")

# When the overrides were read (monotonic) and what they were: one entry, replaced on refresh.
_loaded: dict[str, tuple[float, dict[str, FlowLimit]]] = {}


@dataclass(frozen=True)
class FlowLimits:
    """The limits a handler's jobs are under right now; None: no such limit."""

    rate: RateLimitItem | None = None
    concurrency: int | None = None

    def __bool__(self) -> bool:
        return self.rate is not None or self.concurrency is not None


@lru_cache(maxsize=256)
def _rate(text: str) -> RateLimitItem:
    return rate_limit_parse(text)


def flow_limit_overrides() -> dict[str, FlowLimit]:
    """The admin's overrides by handler path, read again once ``FLOW_LIMITS_REFRESH`` has passed."""
    now = time.monotonic()
    read_at, overrides = _loaded.get("overrides", (None, {}))
    if read_at is None or now - read_at >= settings.FLOW_LIMITS_REFRESH:
        overrides = {row.handler: row for row in FlowLimit.objects.all()}
        _loaded["overrides"] = (now, overrides)
    return overrides


def flow_limit_overrides_forget() -> None:
    """Read the overrides again on next use (tests, and the admin's own process after a change)."""
    _loaded.clear()


def flow_limits_in_force(subscription: Subscription) -> FlowLimits:
    """``subscription``'s limits: the code's, each replaced by the admin's override where one is set."""
    rate_text, concurrency = subscription.rate_limit, subscription.concurrency
    override = flow_limit_overrides().get(subscription.handler_path)
    if override is not None:
        if override.rate_limit.strip():
            rate_text = None if override.rate_limit.strip().lower() == NO_LIMIT else override.rate_limit
        if override.concurrency is not None:
            concurrency = override.concurrency or None
    rate = None
    if rate_text:
        try:
            rate = _rate(rate_text)
        except ValueError:
            # The admin validates; a row written another way must not stop the handler's jobs.
            logger.error(
                "flow limit override of %s has an unreadable rate %r; ignored", subscription.handler_path, rate_text
            )
            rate = _rate(subscription.rate_limit) if subscription.rate_limit else None
    return FlowLimits(rate=rate, concurrency=concurrency)


def unique_window(subscription: Subscription) -> timedelta | None:
    """How long a unique delivery of ``subscription`` holds its key (or debounces): the admin's
    override where one is set, else the code's ``unique_for``; None for a subscription with no key."""
    if subscription.unique is None:
        return None
    override = flow_limit_overrides().get(subscription.handler_path)
    if override is not None and override.unique_for:
        return override.unique_for
    return subscription.unique_for


def flow_limit_snapshot(row: FlowLimit | None) -> dict[str, Any]:
    """The operator-set fields of an override as JSON values, for the history; empty for none."""
    if row is None:
        return {}
    return {
        name: str(value) if isinstance(value, timedelta) else value
        for name, value in ((name, getattr(row, name)) for name in OVERRIDE_FIELDS)
    }


def flow_limit_change_record(
    *, handler: str, old: dict[str, Any], new: dict[str, Any], user: Any = None, source: str = "code"
) -> FlowLimitChange | None:
    """Record one change of ``handler``'s override (``old``/``new`` snapshots, empty when there was
    or is none); None when nothing changed."""
    changes = {name: [old.get(name), new.get(name)] for name in OVERRIDE_FIELDS if old.get(name) != new.get(name)}
    if not changes and old and new:
        return None
    Action = FlowLimitChange.Action
    action = Action.CREATED if not old else Action.DELETED if not new else Action.CHANGED
    if user is not None and not getattr(user, "is_authenticated", False):
        user = None
    flow_limit_overrides_forget()
    return FlowLimitChange.objects.create(handler=handler, action=action, changes=changes, user=user, source=source)
