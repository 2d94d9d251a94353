"""The admin's Django task runs: each run by its task's name, with its status."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from tasks.models import Delivery, TaskRun
from tests.support import django_jobs as jobs

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_list_and_a_run_show_the_task_name_status_and_error(admin_client_logged_in):
    jobs.noop_task.using(run_after=timezone.now() + timedelta(hours=1)).enqueue()
    failed = jobs.failing_task_value_error.enqueue()
    Delivery.objects.filter(message_id=failed.id).update(status=Delivery.Status.DEAD)
    TaskRun.objects.filter(result_id=failed.id).update(
        errors=[{"exception_class_path": "builtins.ValueError", "traceback": "ValueError: boom\n"}]
    )
    listing = admin_client_logged_in.get(reverse("admin:tasks_taskrun_changelist")).content.decode()
    assert "tests.support.django_jobs.noop_task" in listing and "Ready" in listing
    assert "tests.support.django_jobs.failing_task_value_error" in listing and "Failed" in listing
    run = TaskRun.objects.get(result_id=failed.id)
    page = admin_client_logged_in.get(reverse("admin:tasks_taskrun_change", args=[run.pk])).content.decode()
    assert "builtins.ValueError" in page and "ValueError: boom" in page
    assert admin_client_logged_in.get(reverse("admin:tasks_taskrun_add")).status_code == 403
