from django.apps import AppConfig


class MarketplaceConfig(AppConfig):
    """The component marketplace: the domain that runs on the task platform."""

    name = "marketplace"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Subscribe the event handlers, connect the model signals, declare the job schedules."""
        # Imported here, not at the top: these modules import models, which Django allows only
        # once the app registry is ready. Importing jobs also registers its Celery tasks.
        from marketplace import handlers, jobs, signals  # noqa: PLC0415
        from tasks.bus import get_message_broker  # noqa: PLC0415

        handlers.register(get_message_broker())
        signals.connect()
        jobs.declare_schedules()
