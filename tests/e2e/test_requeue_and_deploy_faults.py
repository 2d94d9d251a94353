"""Routine operations with real workers, relay and brokers (issue 14 items 1, 3 and 6, issue 16
item 5): a stale copy of a done delivery and its requeue, two requeues at once, forged
deliveries, rolling deploys (an old worker, a renamed handler, an old payload in the outbox),
deploys' SIGTERMs mid-run, and a message that ends its worker. Each asserts lost = 0 and
applied twice = 0."""

from __future__ import annotations

import re
import signal
import sys
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from config.celery_app import app
from tasks.messaging.deliveries import DELIVER_TASK, deliveries_publish
from tasks.models import DeadLetter, Delivery, Outbox
from tasks.reliability.dead_letters import FailedDelivery, dead_letter_record
from tasks.transaction import register_event
from tests.e2e.conftest import fast_recovery_env
from tests.support.deliveries import recorded_delivery
from tests.support.deploys.handlers import OLD_HANDLER, ExitingEvent, ReshapedEvent
from tests.support.ledger.handlers import LedgerEvent, effects_summary
from tests.support.ledger.models import Effect
from tests.support.processes import CeleryWorker, DurableRedisServer, ManagedProcess, Relay, process_env
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.broker]

OLD_APPS = "tests.support.ledger"  # a worker of the release before tests.support.deploys
NEW_APPS = "tests.support.ledger,tests.support.deploys"
RECORD_EFFECT = "tests.support.ledger.handlers.record_effect"
NEW_HANDLER = "tests.support.deploys.handlers.record_reshaped"


def new_env(**overrides: str) -> dict[str, str]:
    return fast_recovery_env(EXTRA_INSTALLED_APPS=NEW_APPS, **overrides)


def old_env(**overrides: str) -> dict[str, str]:
    return fast_recovery_env(EXTRA_INSTALLED_APPS=OLD_APPS, **overrides)


def lost_and_doubled(expected_keys: set[str]) -> tuple[int, int]:
    applied = set(Effect.objects.values_list("key", flat=True))
    return len(expected_keys - applied), effects_summary()[1]


def send_copy(payload: dict, handler: str, queue: str = "default") -> None:
    """A deliver message as the broker may hold one: re-sent, restored, or forged."""
    app.send_task(DELIVER_TASK, args=(payload, handler), queue=queue, task_id=str(uuid.uuid4()))


def sentinel_applied(key: str) -> bool:
    """Register one more event and wait for it: a single-process worker runs what was queued before it first."""
    register_event(LedgerEvent(key=key))
    wait_until(lambda: Effect.objects.filter(key=key).exists(), timeout=60)
    return True


# --- item 1: done is terminal; requeue sends each dead letter once ----------------------------------


def test_a_stale_copy_that_fails_after_its_delivery_is_done_is_resolved_by_requeue_and_not_run_again(
    clean_broker, admin_client_logged_in
):
    register_event(LedgerEvent(key="once"))
    with CeleryWorker(env=new_env(), concurrency=1) as worker:
        wait_until(lambda: Effect.objects.filter(key="once").exists(), timeout=60, message=worker.log)
        delivery = Delivery.objects.get()
        assert delivery.status == Delivery.Status.DONE
        # A stale copy that fails before it can see the done mark (a payload it cannot read).
        stale = {**delivery.payload, "data": {**delivery.payload["data"], "work_seconds": "not a number"}}
        send_copy(stale, delivery.handler)
        dead = wait_until(DeadLetter.objects.first, timeout=60, message=worker.log)
        assert Delivery.objects.get().status == Delivery.Status.DONE  # the copy's failure did not undo it

        response = admin_client_logged_in.post(
            reverse("admin:tasks_deadletter_changelist"),
            {"action": "requeue_dead_letters", "_selected_action": [dead.pk]},
            follow=True,
        )
        assert "1 resolved" in response.content.decode()
        assert sentinel_applied("after-requeue")  # anything the requeue sent would have run first
    dead.refresh_from_db()
    assert dead.status == DeadLetter.Status.RESOLVED
    assert Effect.objects.filter(key="once").count() == 1
    assert lost_and_doubled({"once", "after-requeue"}) == (0, 0)


def test_each_dead_letter_is_sent_once_when_two_requeue_commands_run_at_once(clean_broker):
    keys = [f"dl{i}" for i in range(300)]
    for key in keys:
        message = LedgerEvent(key=key)
        recorded_delivery(message, handler=RECORD_EFFECT)
        dead_letter_record(
            task_name=DELIVER_TASK, task_id="t", queue="default", args=[], kwargs={}, exc=RuntimeError("fixed since"),
            traceback="", attempts=1, reason="failed",
            delivery=FailedDelivery(message_id=str(message.message_id), handler=RECORD_EFFECT,
                                    message_type=message.message_name, payload=message.to_json()),
        )  # fmt: skip
    command = [sys.executable, "manage.py", "dead_letters", "requeue", "--all"]
    admins = [ManagedProcess(command, name=f"requeue-{i}", env=process_env()) for i in range(2)]
    for admin in admins:
        admin.start(wait=False)
    for admin in admins:
        assert admin.proc.wait(timeout=120) == 0, admin.log()
    sent = [re.search(r"^requeued (\d+)\b", a.log(), re.MULTILINE) for a in admins]
    assert sum(int(found[1]) for found in sent) == len(keys), [a.log()[-500:] for a in admins]

    with CeleryWorker(env=new_env()) as worker:
        wait_until(lambda: effects_summary()[0] == len(keys), timeout=120, message=lambda: worker.log()[-2000:])
    assert set(DeadLetter.objects.values_list("requeue_count", flat=True)) == {1}
    assert set(Delivery.objects.values_list("send_count", flat=True)) == {2}  # recorded once, requeued once
    assert lost_and_doubled(set(keys)) == (0, 0)


# --- issue 16 item 5: a forged delivery is refused, recorded, never run ------------------------------


def test_forged_deliveries_are_refused_and_recorded_and_never_run_by_a_real_worker(clean_broker):
    marker = LedgerEvent(key="FORGED-MARKER").to_json()
    wrong_type = ReshapedEvent(key="forged-effect").to_json()  # record_effect is LedgerEvent's handler
    forged = [(marker, "builtins.print"), (marker, "sys.exit"), (marker, "os.system"), (wrong_type, RECORD_EFFECT)]
    with CeleryWorker(env=new_env(), concurrency=1) as worker:
        for payload, handler in forged:
            send_copy(payload, handler)
        wait_until(lambda: DeadLetter.objects.count() == len(forged), timeout=60, message=worker.log)
        assert sentinel_applied("still-serving")
        assert worker.running  # sys.exit never ran
    assert set(DeadLetter.objects.values_list("reason", flat=True)) == {"refused"}
    assert sorted(DeadLetter.objects.values_list("handler", flat=True)) == sorted(h for _, h in forged)
    assert "LedgerEvent(key='FORGED-MARKER'" not in worker.log()  # print never ran
    assert not Effect.objects.filter(key="forged-effect").exists()
    assert not Delivery.objects.filter(handler__in=["builtins.print", "sys.exit", "os.system"]).exists()


# --- item 3: rolling deploys --------------------------------------------------------------------------


def test_an_old_worker_retries_new_work_for_the_deploy_window_and_the_new_release_runs_it_once(clean_broker):
    new_work = ReshapedEvent(key="new-type")
    renamed = ReshapedEvent(key="old-handler-path")
    deliveries_publish(
        [recorded_delivery(new_work, handler=NEW_HANDLER), recorded_delivery(renamed, handler=OLD_HANDLER)]
    )
    # The old release does not know the type yet: it waits, it does not dead-letter.
    with CeleryWorker(env=old_env(DELIVERY_DEPLOY_WINDOW="600"), concurrency=1) as old:
        old.wait_for_log("(deploy window)", count=4, timeout=90)
    assert not DeadLetter.objects.exists()
    assert not Effect.objects.exists()
    assert set(Delivery.objects.values_list("unfinished_starts", flat=True)) == {0}  # waiting is not dying

    # An Outbox row written by the old release, in the old shape (version 1 called ``key`` ``name``).
    old_payload = {
        "type": ReshapedEvent.message_name,
        "data": {"name": "old-payload", "message_id": str(uuid.uuid4()), "occurred_at": timezone.now().isoformat()},
    }
    with transaction.atomic():
        Outbox.objects.create(message_id=old_payload["data"]["message_id"], message_type="x", payload=old_payload)
    with CeleryWorker(env=new_env()) as worker, Relay(env=new_env()) as relay:
        expected = {"new-type", "old-handler-path", "old-payload"}
        wait_until(
            lambda: lost_and_doubled(expected)[0] == 0,
            timeout=150,
            message=lambda: worker.log()[-3000:] + relay.log()[-2000:],
        )
        assert Delivery.objects.get(handler=OLD_HANDLER).status == Delivery.Status.DONE  # ran under its old key
    assert not DeadLetter.objects.exists()
    assert lost_and_doubled(expected) == (0, 0)


def test_new_work_is_dead_lettered_as_unknown_after_the_deploy_window_and_runs_once_when_requeued(clean_broker):
    message = ReshapedEvent(key="late-deploy")
    deliveries_publish([recorded_delivery(message, handler=NEW_HANDLER)])
    with CeleryWorker(env=old_env(DELIVERY_DEPLOY_WINDOW="4"), concurrency=1) as old:
        dead = wait_until(DeadLetter.objects.first, timeout=90, message=old.log)
    assert dead.reason == "unknown type"
    assert Delivery.objects.get().status == Delivery.Status.DEAD
    with CeleryWorker(env=new_env()) as worker:
        from django.core.management import call_command  # noqa: PLC0415

        call_command("dead_letters", "requeue", "--all")
        wait_until(lambda: Effect.objects.filter(key="late-deploy").exists(), timeout=60, message=worker.log)
    assert lost_and_doubled({"late-deploy"}) == (0, 0)


# --- item 6: only a dying worker counts toward the poison limit ---------------------------------------


def test_a_healthy_delivery_survives_four_sigterm_deploys_mid_run_and_runs_once(clean_broker, flag_path):
    env = new_env(
        DELIVERY_MAX_UNFINISHED_STARTS="3", CELERY_TASK_TIME_LIMIT="30", CELERY_TASK_SOFT_TIME_LIMIT="25",
        CELERY_VISIBILITY_TIMEOUT="61", WORKER_SHUTDOWN_GRACE="3",
    )  # fmt: skip
    register_event(LedgerEvent(key="deployed-4-times", mode="slow", work_seconds=25, flag_path=flag_path))
    for deploy in range(4):
        worker = CeleryWorker(env=env, concurrency=1).start()
        try:
            wait_until(
                lambda: Delivery.objects.filter(status=Delivery.Status.RUNNING).exists(), timeout=90, message=worker.log
            )
            worker.signal(signal.SIGTERM)  # a deploy: the grace passes, the task goes back
            worker.proc.wait(timeout=60)
        finally:
            worker.stop()
        assert not Effect.objects.exists()
        assert Delivery.objects.get().unfinished_starts == 0, f"deploy {deploy}: {worker.log()[-3000:]}"
    Path(flag_path).touch()  # the next run is quick
    with CeleryWorker(env=env) as worker:
        wait_until(Effect.objects.exists, timeout=90, message=worker.log)
    assert not DeadLetter.objects.exists()
    assert Delivery.objects.get().attempts == 5
    assert lost_and_doubled({"deployed-4-times"}) == (0, 0)


def test_a_message_that_ends_its_worker_each_time_is_still_dead_lettered_as_poison(clean_broker, flag_path):
    event = ExitingEvent(key="poison", flag_path=flag_path)
    deliveries_publish([recorded_delivery(event, handler="tests.support.deploys.handlers.exit_until_flag")])
    with CeleryWorker(env=new_env(DELIVERY_MAX_UNFINISHED_STARTS="3"), concurrency=1) as worker:
        dead = wait_until(lambda: DeadLetter.objects.filter(reason="poison").first(), timeout=120, message=worker.log)
        assert worker.running
    assert Delivery.objects.get().status == Delivery.Status.DEAD
    assert dead.exception_message.startswith("started 4 times")
    assert not Effect.objects.exists()


def test_a_delivery_cancelled_by_a_lost_broker_connection_gives_its_start_back(clean_broker, flag_path, tmp_path):
    if not settings.CELERY_BROKER_URL.startswith("redis"):
        pytest.skip("restarts a private Redis broker")
    broker = DurableRedisServer(tmp_path / "redis").start()
    env = new_env(
        CELERY_BROKER_URL=broker.url, DELIVERY_MAX_UNFINISHED_STARTS="3", CELERY_TASK_TIME_LIMIT="30",
        CELERY_TASK_SOFT_TIME_LIMIT="25", CELERY_VISIBILITY_TIMEOUT="61",
    )  # fmt: skip
    event = LedgerEvent(key="reconnected", mode="slow", work_seconds=25, flag_path=flag_path)
    # Committed by web, sent by the relay (both on the private broker).
    Outbox.objects.create(message_id=event.message_id, message_type=event.message_name, payload=event.to_json())
    worker, relay = CeleryWorker(env=env, concurrency=1).start(), Relay(env=env).start()
    try:
        wait_until(lambda: Delivery.objects.filter(status=Delivery.Status.RUNNING).exists(), timeout=90)
        broker.restart()  # the worker loses its connection and cancels the running delivery
        wait_until(
            lambda: Delivery.objects.filter(status=Delivery.Status.PENDING, unfinished_starts=0).exists(),
            timeout=60,
            message=lambda: worker.log()[-3000:],
        )
        Path(flag_path).touch()  # its next run (a restored or re-sent copy) is quick
        wait_until(Effect.objects.exists, timeout=150, message=lambda: worker.log()[-3000:])
    finally:
        for process in (relay, worker, broker):
            process.stop()
    assert not DeadLetter.objects.exists()
    assert lost_and_doubled({"reconnected"}) == (0, 0)
