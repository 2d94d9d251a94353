"""Imported by Celery's autodiscovery: registers every platform task."""

from tasks import delivery, diagnostics  # noqa: F401
