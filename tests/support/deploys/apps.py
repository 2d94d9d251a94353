from django.apps import AppConfig


class DeploysConfig(AppConfig):
    name = "tests.support.deploys"
    label = "deploys"

    def ready(self) -> None:
        # Subscriptions are made at start-up, as an app does: a worker finds handlers only there.
        from tests.support.deploys.handlers import register  # noqa: PLC0415 (after app loading)

        register()
