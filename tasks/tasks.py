"""Imported by Celery's autodiscovery: registers every platform task."""

from tasks import diagnostics  # noqa: F401
