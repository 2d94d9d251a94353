"""Public API: batches of jobs and events with progress and a completion callback run once.

```python
from tasks.batches import batch_open, batch_members, batch_close

with transaction.atomic():
    batch = batch_open(name="reindex all", on_complete=reindex_finished)  # a Django @task
    with batch_members(batch):
        for component in components:
            reindex.enqueue(component.pk)  # or register_event(...): its deliveries join
    batch_close(batch=batch)
```

When every member is done, dead-lettered or cancelled, the relay enqueues
``on_complete(batch_id=..., name=..., total=..., done=..., failed=...)`` exactly once.
"""

from tasks.batches.services import BatchClosed, batch_close, batch_members, batch_open

__all__ = ["BatchClosed", "batch_close", "batch_members", "batch_open"]
