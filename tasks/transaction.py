"""Public API: ``transactional`` and ``register_event``, events that exist only if the transaction
commits (DESIGN.md section 4).

```python
@transactional
def component_upload(*, author, name, source):
    component = Component.objects.create(...)
    register_event(ComponentUploaded(component_id=component.pk, author_id=author.pk))
    return component
```

The outbox lives in ``tasks.messaging.outbox``; this module is the front other code imports.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from django.db import transaction

from tasks.messaging.outbox import register_event

__all__ = ["register_event", "transactional"]

P = ParamSpec("P")
R = TypeVar("R")


def transactional(func: Callable[P, R]) -> Callable[P, R]:
    """Run ``func`` inside ``transaction.atomic()`` (a savepoint when already in one)."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with transaction.atomic():
            return func(*args, **kwargs)

    return wrapper
