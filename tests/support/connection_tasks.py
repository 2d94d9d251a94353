"""Test-only task for the worker connection tests, loaded by worker subprocesses with ``--include``."""

from celery import shared_task
from django.db import connection


@shared_task(name="tests.database_session")
def database_session() -> int:
    """The PostgreSQL backend process this task's queries ran on."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]
