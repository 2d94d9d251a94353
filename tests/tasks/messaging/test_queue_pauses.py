"""Paused queues: the persisted state, and what a worker's consumer step does with it."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from tasks.messaging.queue_pauses import paused_queues, queue_pause, queue_resume
from tasks.models import QueuePause
from tasks.reliability.paused_queues import QueuePauseStep

pytestmark = pytest.mark.django_db


def test_a_queue_is_paused_and_resumed_once_and_only_platform_queues_are():
    assert queue_pause(queue="low", by="ops", reason="incident") is True
    assert queue_pause(queue="low") is False
    assert paused_queues() == {"low"}
    with pytest.raises(ValueError, match="Unknown queue"):
        queue_pause(queue="nowhere")
    assert queue_resume(queue="low") is True and queue_resume(queue="low") is False
    assert paused_queues() == set()


class FakeQueue:
    def __init__(self, name: str) -> None:
        self.name = name


class FakeConsumer:
    """The parts of Celery's consumer the step uses: its task consumer's queues, cancel and add."""

    def __init__(self, queues: list[str]) -> None:
        self.task_consumer = type("TaskConsumer", (), {"queues": [FakeQueue(q) for q in queues]})()
        self.calls: list[tuple[str, str]] = []

    def cancel_task_queue(self, queue: str) -> None:
        self.calls.append(("cancel", queue))
        self.task_consumer.queues = [q for q in self.task_consumer.queues if q.name != queue]

    def add_task_queue(self, queue: str) -> None:
        self.calls.append(("add", queue))
        self.task_consumer.queues.append(FakeQueue(queue))


@pytest.mark.django_db(transaction=True)  # the step closes old connections, as in a worker
def test_the_worker_step_stops_consuming_a_paused_queue_and_resumes_it_once():
    consumer = FakeConsumer(["high", "default", "low"])
    step = QueuePauseStep.__new__(QueuePauseStep)
    step.stopped, step.failing, step.timer_ref = set(), False, None
    step.sync(consumer)
    assert consumer.calls == []
    queue_pause(queue="default")
    step.sync(consumer)
    step.sync(consumer)
    assert consumer.calls == [("cancel", "default")]
    queue_resume(queue="default")
    step.sync(consumer)
    step.sync(consumer)
    assert consumer.calls == [("cancel", "default"), ("add", "default")]


def test_the_command_lists_pauses_and_resumes(capsys):
    call_command("queues", "pause", "high", "--reason", "deploy")
    call_command("queues", "list")
    out = capsys.readouterr().out
    assert "high paused" in out and "high     paused" in out and "default  consumed" in out
    assert QueuePause.objects.get().reason == "deploy"
    call_command("queues", "resume", "high")
    assert "high resumed" in capsys.readouterr().out
    with pytest.raises(CommandError, match="needs a queue"):
        call_command("queues", "pause")


def test_the_admin_pauses_with_its_form_and_resumes_with_its_action(admin_client_logged_in):
    add = admin_client_logged_in.post(reverse("admin:tasks_queuepause_add"), {"queue": "low", "reason": "slow API"})
    assert add.status_code == 302 and paused_queues() == {"low"}
    assert QueuePause.objects.get().paused_by == "root"  # the admin user
    pause = QueuePause.objects.get()
    admin_client_logged_in.post(
        reverse("admin:tasks_queuepause_changelist"), {"action": "resume_queues", "_selected_action": [pause.pk]}
    )
    assert paused_queues() == set()


def test_the_status_page_shows_paused_queues_and_its_buttons_pause_and_resume(
    admin_client_logged_in, redis_client, settings
):
    settings.STATUS_BROKER_TIMEOUT = 2
    url = reverse("admin:queue_pause")
    admin_client_logged_in.post(url, {"queue": "default", "action": "pause"})
    assert paused_queues() == {"default"}
    page = admin_client_logged_in.get(reverse("admin:platform_status")).content.decode()
    assert '<span class="status-bad">paused</span>' in page and 'value="resume"' in page
    admin_client_logged_in.post(url, {"queue": "default", "action": "resume"})
    assert paused_queues() == set()
    assert admin_client_logged_in.post(url, {"queue": "nowhere", "action": "pause"}).status_code == 400
    assert admin_client_logged_in.get(url).status_code == 405
