from django.apps import AppConfig


class StreamedConfig(AppConfig):
    name = "tests.support.streamed"
    label = "streamed"

    def ready(self) -> None:
        # The relay sequences a class only if its process has it registered, as in production.
        from tests.support import streams  # noqa: F401, PLC0415 (defines StreamedItem: registration is the point)
