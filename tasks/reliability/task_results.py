"""A task's SUCCESS result written with one statement, inside the caller's transaction.

django-celery-results stores a result with ``get_or_create``: a SELECT, then an INSERT inside a
savepoint (four round trips). ``tasks.deliver`` writes its result in the handler's transaction
for every delivery, so it is done here as one upsert on ``task_id`` with the same columns,
computed by the result backend's own helpers.
"""

from __future__ import annotations

from typing import Any

from celery import states
from django_celery_results.backends.database import DatabaseBackend
from django_celery_results.models import TaskResult

# Everything but the key and the creation time, which an earlier RETRY row keeps.
_UPDATED = [f.name for f in TaskResult._meta.concrete_fields if f.name not in ("id", "task_id", "date_created")]


def task_result_store_success(*, backend: DatabaseBackend, request: Any, result: Any) -> None:
    """Store ``result`` as the SUCCESS of the task of ``request`` (a Celery task request), as
    ``backend.store_result`` would, in one INSERT ... ON CONFLICT (task_id) DO UPDATE."""
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
    TaskResult.objects.bulk_create([row], update_conflicts=True, unique_fields=["task_id"], update_fields=_UPDATED)
