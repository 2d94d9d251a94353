"""The public front for jobs and schedules: everything domain code may import besides messaging.

```python
from tasks.jobs import PlatformTask, TransientError, PermanentError, declare_schedule, Misfire, Overlap
```

``PlatformTask`` is the base of every job (declared retries of transient errors, a dead letter
on final failure, structured logs); ``declare_schedule`` registers a job's default schedule,
written by ``manage.py sync_schedules``; ``Misfire`` and ``Overlap`` are its policies.
"""

from tasks.models import SchedulePolicy
from tasks.reliability.platform_task import PermanentError, PlatformTask, TransientError
from tasks.scheduling.declared import declare_schedule

Misfire = SchedulePolicy.Misfire
Overlap = SchedulePolicy.Overlap

__all__ = ["Misfire", "Overlap", "PermanentError", "PlatformTask", "TransientError", "declare_schedule"]
