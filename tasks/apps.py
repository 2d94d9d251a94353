from django.apps import AppConfig


class TasksConfig(AppConfig):
    """The task platform app."""

    name = "tasks"
    verbose_name = "Task platform"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Monitoring: stamp published tasks with their send time, record task metrics in the
        # workers, and register the health checks. Workers keep database connections per
        # CONN_MAX_AGE.
        from tasks import publish_timestamps, task_metrics, worker_connections  # noqa: F401
        from tasks.health import register_platform_checks

        register_platform_checks()
