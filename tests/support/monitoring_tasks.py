"""Test-only tasks for the metrics tests, loaded by worker subprocesses with ``--include``.

Never imported by production code: they exist so a test can make a real worker fail and retry.
"""

from celery import shared_task


class ExpectedTestFailure(Exception):
    """Raised on purpose by ``tests.always_fails``."""


@shared_task(name="tests.always_fails")
def always_fails() -> None:
    raise ExpectedTestFailure("this task fails on purpose")


@shared_task(name="tests.retries_once", bind=True, max_retries=1, default_retry_delay=0)
def retries_once(self) -> str:
    """Retry on the first run, succeed on the second."""
    if self.request.retries == 0:
        raise self.retry(countdown=0)
    return "second attempt worked"
