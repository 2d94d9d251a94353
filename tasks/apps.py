from django.apps import AppConfig

from tasks.monitoring import publish_timestamps, task_metrics, tracing
from tasks.reliability import worker_connections


class TasksConfig(AppConfig):
    """The task platform app: connects its signal handlers, registers its health checks and
    declares its housekeeping schedules."""

    name = "tasks"
    verbose_name = "Task platform"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Imported here, not at the top: these modules import models, which Django allows only
        # once the app registry is ready.
        from tasks import tasks  # noqa: PLC0415
        from tasks.django_tasks import runner  # noqa: PLC0415
        from tasks.messaging import publisher  # noqa: PLC0415
        from tasks.monitoring import health  # noqa: PLC0415
        from tasks.reliability import expiry  # noqa: PLC0415
        from tasks.scheduling import history  # noqa: PLC0415

        history.connect()
        publisher.connect()
        publish_timestamps.connect()
        task_metrics.connect()
        tracing.connect()
        worker_connections.connect()
        expiry.connect()
        runner.connect()
        health.register_platform_checks()
        tasks.declare_schedules()
