"""Test-only ``PlatformTask`` jobs for the outage tests; workers load them with
``--include tests.support.outage_tasks``.

Each run is counted in a file, not in the database: the database may be down while they run.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from celery import shared_task

from tasks.jobs import PlatformTask, TransientError
from tests.support.processes import free_port

RECORD_RUN = "tests.outage.record_run"
FAIL_FOR_GOOD = "tests.outage.fail_for_good"
FLAKY_WITH_BROKEN_RETRY = "tests.outage.flaky_with_broken_retry"


def count_lines(path: str | Path) -> int:
    """How many runs a task appended to ``path``."""
    path = Path(path)
    return len(path.read_text().splitlines()) if path.exists() else 0


def _append(path: str, line: str) -> int:
    with open(path, "a") as runs:
        runs.write(line + "\n")
    return count_lines(path)


@shared_task(base=PlatformTask, bind=True, name=RECORD_RUN)
def record_run(self: PlatformTask, runs_path: str) -> str:
    """A plain job whose one effect is a line in ``runs_path``."""
    _append(runs_path, self.request.id)
    return "ran"


@shared_task(base=PlatformTask, bind=True, name=FAIL_FOR_GOOD, max_retries=2)
def fail_for_good(self: PlatformTask, runs_path: str, final_path: str, outage_path: str) -> None:
    """Always fails transiently. Its final attempt says so in ``final_path`` and fails only once
    ``outage_path`` exists, so the test can stop the database just before its failure is stored."""
    _append(runs_path, f"retries={self.request.retries}")
    if self.request.retries >= self.max_retries:
        Path(final_path).touch()
        deadline = time.monotonic() + 60
        while not Path(outage_path).exists() and time.monotonic() < deadline:
            time.sleep(0.1)
    raise TransientError("never works")


class RetryPublishFailsOnce(PlatformTask):
    """A task whose first retry is published to a broker port nobody listens on: a broker blip
    that hits exactly the retry's publish (``published_marker`` records that it happened)."""

    def apply_async(self, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        marker = Path(f"{(kwargs or {}).get('runs_path', '')}.retry-publish-failed")
        if self.request.id and not marker.exists():  # a retry, sent from inside a run
            marker.touch()
            broker = urlsplit(self.app.conf.broker_url)
            dead = broker._replace(netloc=f"127.0.0.1:{free_port()}").geturl()
            with self.app.connection_for_write(dead) as connection:
                return super().apply_async(args, kwargs, connection=connection, **options)
        return super().apply_async(args, kwargs, **options)


@shared_task(base=RetryPublishFailsOnce, bind=True, name=FLAKY_WITH_BROKEN_RETRY)
def flaky_with_broken_retry(self: PlatformTask, runs_path: str, effects_path: str) -> str:
    """Fails transiently in its first two runs, then applies its effect (a line in ``effects_path``)."""
    if _append(runs_path, f"retries={self.request.retries}") <= 2:
        raise TransientError("not yet")
    _append(effects_path, self.request.id)
    return "done"
