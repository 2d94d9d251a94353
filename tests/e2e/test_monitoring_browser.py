"""An operator's monitoring tour in headless Chromium: admin, status page, schedules, dead letters, Flower.

Against real processes: the app served by pytest-django's live server, a ``celery worker``, a
Beat with the platform scheduler, Flower. Screenshots land in ``VAR_DIR/test-artifacts/``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from django_celery_results.models import TaskResult
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select
from selenium.webdriver.support.wait import WebDriverWait

from tasks.models import BeatHeartbeat, DeadLetter
from tests.support.browser import admin_login, headless_chromium, screenshot
from tests.support.processes import CeleryBeat, Flower
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.browser]

PASSWORD = "pw-for-tests"  # the ``superuser`` fixture's


@pytest.fixture
def browser(tmp_path) -> Iterator[WebDriver]:
    driver = headless_chromium(tmp_path / "chromium-profile")
    yield driver
    driver.quit()


@pytest.fixture
def quick_status(settings):
    settings.STATUS_INSPECT_TIMEOUT = 1.0
    settings.STATUS_BROKER_TIMEOUT = 3


def text_of(driver: WebDriver, css: str) -> str:
    return driver.find_element(By.CSS_SELECTOR, css).text


def test_operator_logs_in_and_sees_the_worker_on_the_status_page(
    browser, live_server, superuser, celery_worker_process, quick_status
):
    now = timezone.now()
    BeatHeartbeat.objects.create(name="beat", leader="beat-host:7", started_at=now, last_tick_at=now)

    admin_login(browser, live_server.url, superuser.username, PASSWORD)
    browser.find_element(By.LINK_TEXT, "Platform status").click()

    assert browser.title.startswith("Platform status")
    worker_name = celery_worker_process.hostname.split("@")[0]
    wait_until(
        lambda: worker_name in text_of(browser, "#status-workers") or browser.refresh(),
        timeout=30,
        message="the worker on the status page",
    )
    assert "online" in text_of(browser, "#status-workers")
    assert "beat-host:7" in text_of(browser, "#status-beat")
    for queue in ("high", "default", "low"):
        assert queue in text_of(browser, "#status-queues")
    assert browser.find_element(By.CSS_SELECTOR, "#status-throughput svg")
    assert browser.find_element(By.CSS_SELECTOR, "meta[http-equiv=refresh]")
    screenshot(browser, "status-page")


def test_a_periodic_task_created_in_the_admin_form_runs(
    browser, live_server, superuser, celery_worker_process, quick_status
):
    IntervalSchedule.objects.create(every=2, period=IntervalSchedule.SECONDS)
    name = f"browser ping {uuid.uuid4().hex[:6]}"
    beat = CeleryBeat().start()
    try:
        admin_login(browser, live_server.url, superuser.username, PASSWORD)
        browser.get(live_server.url + reverse("admin:django_celery_beat_periodictask_add"))
        browser.find_element(By.NAME, "name").send_keys(name)
        Select(browser.find_element(By.NAME, "regtask")).select_by_value("tasks.ping")
        Select(browser.find_element(By.NAME, "interval")).select_by_index(1)
        screenshot(browser, "periodic-task-form")
        browser.find_element(By.NAME, "_save").click()
        # click() returns before the POST is answered: wait for the admin to leave the form.
        try:
            WebDriverWait(browser, 30).until(lambda d: "/add/" not in d.current_url)
        except TimeoutException:
            pytest.fail(f"the form was not saved:\n{browser.page_source[:3000]}")
        assert PeriodicTask.objects.filter(name=name, task="tasks.ping").exists()

        wait_until(
            lambda: TaskResult.objects.filter(periodic_task_name=name, status="SUCCESS").exists(),
            timeout=60,
            message=lambda: f"a run of {name!r}\n{beat.log()[-3000:]}",
        )
    finally:
        beat.stop()

    browser.get(live_server.url + reverse("admin:platform_status"))
    schedules = text_of(browser, "#status-schedules")
    assert name in schedules
    assert "SUCCESS" in schedules
    screenshot(browser, "status-page-schedule-ran")


def test_operator_requeues_a_dead_letter_from_the_status_page(browser, live_server, superuser, redis_client):
    now = timezone.now()
    dead = DeadLetter.objects.create(
        task_name="tasks.ping", queue="low", exception_type="ConnectionError", reason="retries exhausted",
        first_failed_at=now, last_failed_at=now,
    )  # fmt: skip

    admin_login(browser, live_server.url, superuser.username, PASSWORD)
    browser.get(live_server.url + reverse("admin:platform_status"))
    assert "ConnectionError" in text_of(browser, "#status-dead-letters")
    browser.find_element(By.CSS_SELECTOR, "#status-dead-letters a[href*='/deadletter/']").click()
    screenshot(browser, "dead-letter")
    browser.find_element(By.NAME, "_requeue").click()

    assert "Requeued" in text_of(browser, ".messagelist")
    dead.refresh_from_db()
    assert dead.status == DeadLetter.Status.REQUEUED
    assert redis_client.llen("low") == 1  # sent again, waiting for a worker
    screenshot(browser, "dead-letter-requeued")


def test_operator_logs_in_to_flower_and_sees_the_worker_online(browser, celery_worker_process):
    with Flower(basic_auth="ops:flower-pw") as flower:
        worker_name = celery_worker_process.hostname.split("@")[0]
        browser.get(flower.url)  # no credentials: refused, nothing shown
        assert "Flower" not in browser.title
        assert worker_name not in browser.page_source

        browser.get(flower.url.replace("http://", "http://ops:flower-pw@"))
        wait_until(
            lambda: worker_name in browser.page_source or browser.refresh(),
            timeout=45,
            message="the worker in Flower",
        )
        assert "Online" in browser.page_source
        screenshot(browser, "flower-workers")
