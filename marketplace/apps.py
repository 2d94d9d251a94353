from django.apps import AppConfig


class MarketplaceConfig(AppConfig):
    """The component marketplace: the domain that runs on the task platform."""

    name = "marketplace"
    default_auto_field = "django.db.models.BigAutoField"
