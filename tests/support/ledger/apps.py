from django.apps import AppConfig


class LedgerConfig(AppConfig):
    name = "tests.support.ledger"
    label = "ledger"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Every process (tests, workers, relay, publishers) knows the same wiring, as in production.
        from tests.support.ledger.handlers import register  # noqa: PLC0415 (handlers import models: only once apps are ready)

        register()
