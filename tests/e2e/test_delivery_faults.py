"""Fault tests: real workers killed, brokers stopped, poison messages. Each asserts two numbers:
messages lost (0) and side effects applied twice (0)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import transaction
from django.db.models import Count
from django.urls import reverse
from django_celery_results.models import TaskResult

from tasks.messaging.publisher import publisher_flush
from tasks.models import DeadLetter, Delivery, Outbox
from tasks.reliability.deliver import deliver
from tasks.transaction import register_event
from tests.e2e.conftest import fast_recovery_env
from tests.support.ledger.handlers import LedgerEvent, effects_summary
from tests.support.ledger.models import Effect
from tests.support.processes import CeleryWorker, DurableRedisServer, ManagedProcess, Relay
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.broker]

TOTAL = 1000


def _register(count: int, *, prefix: str = "k", per_transaction: int = 100, **fields) -> None:
    """Commit ``count`` events; return once this process's publisher has sent (or given up) them."""
    for start in range(0, count, per_transaction):
        with transaction.atomic():
            for i in range(start, min(start + per_transaction, count)):
                register_event(LedgerEvent(key=f"{prefix}{i}", **fields))
    publisher_flush(30)


def _lost_and_doubled(expected: int) -> tuple[int, int]:
    distinct, twice = effects_summary()
    return expected - distinct, twice


def _run_state(*processes: ManagedProcess) -> str:
    """What a stalled run looks like: effects, outbox, deliveries, and each process's log tail."""
    statuses = dict(Delivery.objects.values_list("status").annotate(n=Count("pk")))
    unsent = Outbox.objects.filter(sent_at__isnull=True).count()
    logs = "".join(f"\n--- {p.name} (running={p.running}) ---\n{p.log()[-3000:]}" for p in processes)
    return f"effects {effects_summary()}, unsent outbox rows {unsent}, deliveries {statuses}{logs}"


def test_nothing_lost_or_doubled_when_workers_are_killed_mid_run(clean_broker):
    env = fast_recovery_env()
    _register(TOTAL, work_seconds=0.002)
    assert Outbox.objects.filter(sent_at__isnull=True).count() == 0

    # kill -9 of a whole worker (main process and pool children), three times mid-run.
    for _ in range(3):
        with CeleryWorker(env=env) as worker:  # stopped by the with block if the wait fails
            target = Effect.objects.count() + 120
            wait_until(
                lambda t=target: Effect.objects.count() >= t, timeout=60, message=lambda w=worker: w.log()[-2000:]
            )
            worker.kill()

    with CeleryWorker(env=env) as worker, Relay(env=env) as relay:
        wait_until(lambda: effects_summary()[0] == TOTAL, timeout=150, message=lambda: _run_state(worker, relay))
        wait_until(lambda: not Delivery.objects.exclude(status=Delivery.Status.DONE).exists(), timeout=30)
    assert _lost_and_doubled(TOTAL) == (0, 0)
    assert not DeadLetter.objects.exists()


def _committed(progress: Path) -> int:
    """How many events the publisher has committed (its progress file may be mid-write)."""
    text = progress.read_text().strip() if progress.exists() else ""
    return int(text) if text.isdigit() else 0


class _RabbitMQOutage:
    """Stops and starts the machine's RabbitMQ application (durable queues, persistent
    messages survive); the tests' own broker when TEST_BROKER_URL is amqp://."""

    url = settings.CELERY_BROKER_URL

    def start(self) -> None:
        subprocess.run(["rabbitmqctl", "start_app"], check=True, capture_output=True, timeout=120)
        subprocess.run(["rabbitmqctl", "await_startup"], check=True, capture_output=True, timeout=120)

    def stop(self) -> None:
        subprocess.run(["rabbitmqctl", "stop_app"], check=True, capture_output=True, timeout=120)


def test_nothing_lost_or_doubled_when_the_broker_stops_mid_run(clean_broker, tmp_path):
    """The broker stopped while 1,000 events are being committed, then started again: the
    events committed meanwhile wait in the outbox, and the worker consumes again after."""
    if settings.CELERY_BROKER_URL.startswith("redis"):
        broker = DurableRedisServer(tmp_path / "redis").start()
    elif shutil.which("rabbitmqctl"):
        broker = _RabbitMQOutage()
    else:
        pytest.skip("needs rabbitmqctl to stop and start RabbitMQ")
    env = fast_recovery_env(CELERY_BROKER_URL=broker.url)
    progress = tmp_path / "progress"
    publisher = ManagedProcess(
        [sys.executable, "-m", "tests.support.publish_events", str(TOTAL), "--progress", str(progress),
         "--pause", "0.01"],
        name="publisher",
        env=env,
    )  # fmt: skip
    watched_broker = [broker] if isinstance(broker, ManagedProcess) else []
    worker, relay = CeleryWorker(env=env).start(), Relay(env=env).start()
    try:
        publisher.start(wait=False)
        wait_until(lambda: _committed(progress) >= 300, timeout=60)
        broker.stop()
        wait_until(lambda: _committed(progress) >= 600, timeout=60, message=lambda: publisher.log()[-2000:])
        assert Outbox.objects.filter(sent_at__isnull=True).exists()  # commits went on without the broker
        time.sleep(2)  # the broker stays away a while
        broker.start()
        wait_until(lambda: publisher.proc.poll() is not None, timeout=60)
        assert publisher.proc.returncode == 0, publisher.log()[-2000:]
        wait_until(
            lambda: effects_summary()[0] == TOTAL,
            timeout=150,
            message=lambda: _run_state(worker, relay, *watched_broker),
        )
        wait_until(lambda: not Outbox.objects.filter(sent_at__isnull=True).exists(), timeout=30)
        # The same worker process consumed before and after the outage.
        assert worker.running, worker.log()[-3000:]
    finally:
        for process in (publisher, relay, worker):
            process.stop()
        if isinstance(broker, DurableRedisServer):
            broker.stop()
        else:
            broker.start()  # whatever happened, leave RabbitMQ running
    assert _lost_and_doubled(TOTAL) == (0, 0)
    assert "Unrecoverable error" not in worker.log()


def test_poison_message_is_dead_lettered_after_n_starts_then_requeued_from_admin(
    clean_broker, flag_path, admin_client_logged_in
):
    env = fast_recovery_env(DELIVERY_MAX_UNFINISHED_STARTS="2")
    register_event(LedgerEvent(key="poison", mode="poison", flag_path=flag_path))
    with CeleryWorker(env=env, concurrency=1) as worker:
        dead = wait_until(lambda: DeadLetter.objects.filter(reason="poison").first(), timeout=90)
        assert dead.handler.endswith("kill_own_worker_until_flag")
        assert Delivery.objects.get(message_id=dead.message_id).status == Delivery.Status.DEAD
        assert worker.log().count("signal 9") >= 2  # each start killed its pool process
        assert Effect.objects.count() == 0

        Path(flag_path).touch()  # the operator fixed the cause
        response = admin_client_logged_in.post(
            reverse("admin:tasks_deadletter_changelist"),
            {"action": "requeue_dead_letters", "_selected_action": [dead.pk]},
            follow=True,
        )
        assert response.status_code == 200
        wait_until(
            lambda: Effect.objects.filter(key="poison").exists(), timeout=30, message=lambda: worker.log()[-2000:]
        )
        wait_until(lambda: Delivery.objects.get(message_id=dead.message_id).status == Delivery.Status.DONE)
    dead.refresh_from_db()
    assert dead.status == DeadLetter.Status.REQUEUED
    assert _lost_and_doubled(1) == (0, 0)


def test_transient_failures_succeed_after_retries(clean_broker, flag_path):
    register_event(LedgerEvent(key="flaky", mode="transient", flag_path=flag_path))
    # Retries at most 1 s apart: the default cap of 5 could run out on a loaded machine
    # between this test seeing the second attempt and touching the flag.
    with CeleryWorker(env=fast_recovery_env(TASKS_MAX_RETRIES="100")) as worker:
        wait_until(lambda: Delivery.objects.filter(attempts__gte=2).exists(), timeout=30)
        Path(flag_path).touch()
        wait_until(lambda: Effect.objects.filter(key="flaky").exists(), timeout=30, message=lambda: _run_state(worker))
    assert _lost_and_doubled(1) == (0, 0)
    assert not DeadLetter.objects.exists()
    # The retry was stored by Celery; the success, in the handler's transaction, replaced it.
    result = TaskResult.objects.get(task_id=Delivery.objects.get().task_id)
    assert (result.status, result.result, result.task_name) == ("SUCCESS", '"done"', "tasks.deliver")


def test_failures_are_dead_lettered_with_traceback_after_the_retry_cap(clean_broker, flag_path):
    register_event(LedgerEvent(key="never", mode="transient", flag_path=flag_path))
    register_event(LedgerEvent(key="broken", mode="permanent"))
    with CeleryWorker(env=fast_recovery_env(TASKS_MAX_RETRIES="2")):
        wait_until(lambda: DeadLetter.objects.count() == 2, timeout=60)
    exhausted = DeadLetter.objects.get(handler__endswith="fail_until_flag")
    assert exhausted.reason == "retries exhausted"
    assert exhausted.attempts == 3
    assert exhausted.exception_type == "tasks.reliability.platform_task.TransientError"
    permanent = DeadLetter.objects.get(handler__endswith="fail_permanently")
    assert permanent.reason == "failed"
    assert permanent.attempts == 1  # a permanent error is not retried
    assert "cannot handle broken: bad data" in permanent.traceback
    assert permanent.payload["data"]["key"] == "broken"
    assert Effect.objects.count() == 0
    task_ids = Delivery.objects.values_list("task_id", flat=True)
    assert sorted(TaskResult.objects.filter(task_id__in=task_ids).values_list("status", flat=True)) == [
        "FAILURE",
        "FAILURE",
    ]


def _shutdown_env() -> dict[str, str]:
    return fast_recovery_env(
        CELERY_TASK_TIME_LIMIT="30", CELERY_TASK_SOFT_TIME_LIMIT="25", CELERY_VISIBILITY_TIMEOUT="61",
        WORKER_SHUTDOWN_GRACE="4",
    )  # fmt: skip


def test_sigterm_lets_the_running_task_finish_within_the_grace_period(clean_broker, flag_path):
    register_event(LedgerEvent(key="short", mode="slow", work_seconds=2, flag_path=flag_path))
    worker = CeleryWorker(env=_shutdown_env(), concurrency=1).start()
    wait_until(lambda: Delivery.objects.filter(status=Delivery.Status.RUNNING).exists(), timeout=30)
    worker.signal(signal.SIGTERM)
    assert worker.proc.wait(timeout=30) == 0
    assert Effect.objects.filter(key="short").count() == 1
    assert Delivery.objects.get().status == Delivery.Status.DONE


def test_sigterm_gives_a_task_it_cannot_finish_back_to_the_queue(clean_broker, flag_path):
    env = _shutdown_env()
    register_event(LedgerEvent(key="long", mode="slow", work_seconds=25, flag_path=flag_path))
    worker = CeleryWorker(env=env, concurrency=1).start()
    wait_until(lambda: Delivery.objects.filter(status=Delivery.Status.RUNNING).exists(), timeout=30)
    worker.signal(signal.SIGTERM)
    worker.proc.wait(timeout=30)
    assert not Effect.objects.exists()  # cut short after the grace period, nothing committed

    Path(flag_path).touch()  # the next run is quick
    with CeleryWorker(env=env):
        wait_until(lambda: Effect.objects.filter(key="long").exists(), timeout=60)
    assert _lost_and_doubled(1) == (0, 0)


def test_a_task_past_its_soft_time_limit_ends_cleanly_as_a_dead_letter(clean_broker, flag_path, monkeypatch):
    # A task's limits travel in its message, so the publisher (this process) sets them too.
    monkeypatch.setattr(deliver, "soft_time_limit", 4)
    monkeypatch.setattr(deliver, "time_limit", 5)
    monkeypatch.setattr(deliver, "_exec_options", None)  # Celery caches them at the first send
    register_event(LedgerEvent(key="too-slow", mode="slow", work_seconds=20, flag_path=flag_path))
    with CeleryWorker(env=fast_recovery_env(), concurrency=1) as worker:  # soft limit 4 s, hard 5 s
        dead = wait_until(DeadLetter.objects.first, timeout=60, message=lambda: worker.log()[-2000:])
        assert worker.running  # the pool process was not killed: the task ended itself
    assert dead.reason == "time limit"
    assert dead.exception_type.endswith("SoftTimeLimitExceeded")
    assert Delivery.objects.get().status == Delivery.Status.DEAD
    assert not Effect.objects.exists()
