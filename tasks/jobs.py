"""The public front for jobs and schedules: everything domain code may import besides messaging.

```python
from tasks.jobs import PlatformTask, TransientError, PermanentError, declare_schedule, Misfire, Overlap
```

``cancel_requested()`` tells a running handler that an operator cancelled it; raising
``JobCancelled`` then stops it for good (``tasks.reliability.cancellation``).
``PlatformTask`` is the base of every job (declared retries of transient errors, a dead letter
on final failure, structured logs); ``declare_schedule`` registers a job's default schedule,
written by ``manage.py sync_schedules``; ``Misfire`` and ``Overlap`` are its policies.
"""

from tasks.models import SchedulePolicy
from tasks.reliability.cancellation import JobCancelled, cancel_requested
from tasks.reliability.platform_task import PermanentError, PlatformTask, TransientError
from tasks.scheduling.declared import declare_schedule

Misfire = SchedulePolicy.Misfire
Overlap = SchedulePolicy.Overlap

__all__ = [
    "JobCancelled",
    "Misfire",
    "Overlap",
    "PermanentError",
    "PlatformTask",
    "TransientError",
    "cancel_requested",
    "declare_schedule",
]
