"""Project package; importing it loads the Celery app so ``celery -A config`` works."""

from config.celery_app import app as celery_app

__all__ = ("celery_app",)
