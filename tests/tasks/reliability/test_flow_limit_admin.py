"""The flow-limit admin: operators override the limits declared in code, a bad rate is a form
error, every change is in the history, and the list shows each handler's limits in force."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tasks.messaging.brokers import async_subscription_by_handler
from tasks.messaging.flow_limit_overrides import flow_limits_in_force
from tasks.models import FlowLimit, FlowLimitChange
from tests.support.flow_limit_handlers import SCAN_HANDLER

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def limited(flow_limited_handlers):
    return


ADD = reverse("admin:tasks_flowlimit_add")


def test_an_unreadable_rate_is_a_form_error_and_nothing_is_saved(admin_client_logged_in):
    response = admin_client_logged_in.post(ADD, {"handler": SCAN_HANDLER, "rate_limit": "fast please"})
    assert response.status_code == 200
    assert "is not a rate" in response.content.decode()
    assert not FlowLimit.objects.exists() and not FlowLimitChange.objects.exists()


def test_a_unique_window_for_a_handler_without_a_unique_key_is_a_form_error(admin_client_logged_in):
    response = admin_client_logged_in.post(ADD, {"handler": SCAN_HANDLER, "unique_for": "00:05:00"})
    assert response.status_code == 200
    assert "declares no unique key" in response.content.decode()
    assert not FlowLimit.objects.exists()


def test_a_handler_this_code_does_not_subscribe_is_refused(admin_client_logged_in):
    response = admin_client_logged_in.post(ADD, {"handler": "os.system", "concurrency": "1"})
    assert response.status_code == 200
    assert not FlowLimit.objects.exists()


def test_an_override_is_in_force_at_once_and_each_change_is_in_the_history(admin_client_logged_in, superuser):
    subscription = async_subscription_by_handler(SCAN_HANDLER)
    assert flow_limits_in_force(subscription).concurrency == 2

    response = admin_client_logged_in.post(ADD, {"handler": SCAN_HANDLER, "concurrency": "5", "reason": "incident"})
    assert response.status_code == 302
    assert flow_limits_in_force(subscription).concurrency == 5

    row = FlowLimit.objects.get()
    change = reverse("admin:tasks_flowlimit_change", args=[row.pk])
    admin_client_logged_in.post(
        change, {"handler": SCAN_HANDLER, "rate_limit": "3/minute", "concurrency": "5", "reason": "incident"}
    )
    assert flow_limits_in_force(subscription).rate.amount == 3

    admin_client_logged_in.post(reverse("admin:tasks_flowlimit_delete", args=[row.pk]), {"post": "yes"})
    assert flow_limits_in_force(subscription).concurrency == 2, "back to the code's"

    history = list(FlowLimitChange.objects.order_by("at", "pk").values_list("action", "changes", "user", "source"))
    assert history == [
        (
            "created",
            {"concurrency": [None, 5], "rate_limit": [None, ""], "reason": [None, "incident"]},
            superuser.pk,
            "admin",
        ),
        ("changed", {"rate_limit": ["", "3/minute"]}, superuser.pk, "admin"),
        (
            "deleted",
            {"concurrency": [5, None], "rate_limit": ["3/minute", None], "reason": ["incident", None]},
            superuser.pk,
            "admin",
        ),
    ]


def test_the_list_shows_the_limits_declared_in_code_and_in_force(admin_client_logged_in):
    FlowLimit.objects.create(handler=SCAN_HANDLER, concurrency=7)
    page = admin_client_logged_in.get(reverse("admin:tasks_flowlimit_changelist")).content.decode()
    assert "tests.support.flow_limit_handlers.notify_partner" in page
    assert "10/second" in page
    assert "2 at once per key" in page and "7 at once" in page


def test_the_change_page_shows_the_history(admin_client_logged_in):
    admin_client_logged_in.post(ADD, {"handler": SCAN_HANDLER, "concurrency": "4"})
    row = FlowLimit.objects.get()
    page = admin_client_logged_in.get(reverse("admin:tasks_flowlimit_change", args=[row.pk])).content.decode()
    assert "concurrency: None → 4" in page
