from django.apps import AppConfig


class TasksConfig(AppConfig):
    """The task platform app."""

    name = "tasks"
    verbose_name = "Task platform"
    default_auto_field = "django.db.models.BigAutoField"
