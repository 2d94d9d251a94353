from django.apps import AppConfig


class MarketplaceConfig(AppConfig):
    """The component marketplace: the domain that runs on the task platform."""

    name = "marketplace"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from marketplace import handlers, signals  # noqa: F401  (signals connect on import)
        from tasks.bus import get_message_broker

        handlers.register(get_message_broker())

        # Periodic jobs: importing registers the tasks, declare_schedules() their defaults.
        from marketplace import jobs

        jobs.declare_schedules()
