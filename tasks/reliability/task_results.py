"""A task's SUCCESS result as one statement, for the caller's transaction.

django-celery-results stores a result with ``get_or_create``: a SELECT, then an INSERT inside a
savepoint (four round trips). ``tasks.deliver`` writes its result in the handler's transaction
for every delivery, so it is one upsert on ``task_id`` with the same columns, computed by the
result backend's own helpers, sent in the same round trip as the delivery's done mark.
"""

from __future__ import annotations

from typing import Any

from celery import states
from django_celery_results.backends.database import DatabaseBackend
from django_celery_results.models import TaskResult

from tasks.messaging.round_trips import upsert_sql

# Everything but the key and the creation time, which an earlier RETRY row keeps.
_UPDATED = [f.name for f in TaskResult._meta.concrete_fields if f.name not in ("id", "task_id", "date_created")]


def task_result_success_sql(*, backend: DatabaseBackend, request: Any, result: Any) -> tuple[str, list[Any]]:
    """The statement that stores ``result`` as the SUCCESS of the task of ``request`` (a Celery
    task request), as ``backend.store_result`` would: one INSERT ... ON CONFLICT (task_id) DO
    UPDATE, to run with ``tasks.messaging.round_trips.execute_together``."""
    content_type, content_encoding, encoded = backend.encode_content(backend.encode_result(result, states.SUCCESS))
    meta = {**backend._get_meta_from_request(request), "children": backend.current_task_children(request)}
    row = TaskResult(
        task_id=request.id,
        status=states.SUCCESS,
        result=encoded,
        content_type=content_type,
        content_encoding=content_encoding,
        meta=backend.encode_content(meta)[2],
        **backend._get_extended_properties(request, None),
    )
    return upsert_sql(row, unique_fields=["task_id"], update_fields=_UPDATED)
