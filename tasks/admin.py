"""Admin for the platform's own tables. Schedules and monitoring register from their modules."""

from tasks import (
    platform_admin,  # noqa: F401  (dead letters, outbox, deliveries)
    schedule_admin,  # noqa: F401
)
