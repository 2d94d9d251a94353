"""Imported by Celery's autodiscovery: registers every platform task."""

from tasks import delivery, diagnostics, outbox_prune  # noqa: F401
