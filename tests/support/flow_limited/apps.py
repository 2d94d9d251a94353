from django.apps import AppConfig


class FlowLimitedConfig(AppConfig):
    name = "tests.support.flow_limited"
    label = "flow_limited"

    def ready(self) -> None:
        # Workers and the relay know the limited handlers as in production: subscribed in ready().
        from tasks.bus import get_message_broker  # noqa: PLC0415
        from tests.support.flow_limit_handlers import subscribe  # noqa: PLC0415
        from tests.support.rate_admissions import admissions_record  # noqa: PLC0415

        subscribe(get_message_broker())
        admissions_record()
