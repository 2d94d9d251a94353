"""Flow limits and unique windows in force: the code's, with the operators' overrides on top, read
at most every ``FLOW_LIMITS_REFRESH`` seconds; and the history record of a change."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tasks.messaging.brokers import async_subscription_by_handler
from tasks.messaging.flow_limit_overrides import (
    flow_limit_change_record,
    flow_limit_overrides_forget,
    flow_limits_in_force,
    unique_window,
)
from tasks.models import FlowLimit, FlowLimitChange
from tests.support.flow_limit_handlers import NOTIFY_HANDLER, PING_HANDLER, SCAN_HANDLER
from tests.support.unique_handlers import REINDEX_HANDLER
from tests.support.unique_handlers import subscribed as unique_subscribed

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def limited(flow_limited_handlers):
    return


def in_force(handler: str):
    return flow_limits_in_force(async_subscription_by_handler(handler))


def override(**fields) -> None:
    FlowLimit.objects.create(**fields)
    flow_limit_overrides_forget()


def test_without_an_override_the_codes_limits_are_in_force():
    assert (in_force(NOTIFY_HANDLER).rate.amount, in_force(NOTIFY_HANDLER).concurrency) == (10, None)
    assert (in_force(SCAN_HANDLER).rate, in_force(SCAN_HANDLER).concurrency) == (None, 2)
    assert not in_force(PING_HANDLER)


def test_an_override_replaces_only_the_fields_it_sets():
    override(handler=NOTIFY_HANDLER, concurrency=3)
    assert (in_force(NOTIFY_HANDLER).rate.amount, in_force(NOTIFY_HANDLER).concurrency) == (10, 3)


def test_none_and_zero_lift_the_codes_limits():
    override(handler=NOTIFY_HANDLER, rate_limit="none")
    override(handler=SCAN_HANDLER, concurrency=0)
    assert not in_force(NOTIFY_HANDLER) and not in_force(SCAN_HANDLER)


def test_an_unreadable_override_written_outside_the_admin_keeps_the_codes_rate():
    override(handler=NOTIFY_HANDLER, rate_limit="lots")
    assert in_force(NOTIFY_HANDLER).rate.amount == 10


def test_overrides_are_read_again_only_after_the_refresh_interval(settings, django_assert_num_queries):
    settings.FLOW_LIMITS_REFRESH = 3600
    in_force(NOTIFY_HANDLER)
    FlowLimit.objects.create(handler=NOTIFY_HANDLER, rate_limit="1/second")
    with django_assert_num_queries(0):
        assert in_force(NOTIFY_HANDLER).rate.amount == 10, "one query per refresh, not one per job"
    settings.FLOW_LIMITS_REFRESH = 0
    assert in_force(NOTIFY_HANDLER).rate.amount == 1


def test_a_unique_window_override_applies_only_to_a_handler_with_a_unique_key():
    with unique_subscribed():
        override(handler=REINDEX_HANDLER, unique_for=timedelta(seconds=30))
        override(handler=NOTIFY_HANDLER, unique_for=timedelta(seconds=30))
        assert unique_window(async_subscription_by_handler(REINDEX_HANDLER)) == timedelta(seconds=30)
        assert unique_window(async_subscription_by_handler(NOTIFY_HANDLER)) is None


def test_a_change_that_changes_nothing_is_not_recorded():
    same = {"rate_limit": "1/second", "concurrency": None, "unique_for": None, "reason": ""}
    assert flow_limit_change_record(handler=NOTIFY_HANDLER, old=same, new=dict(same)) is None
    assert not FlowLimitChange.objects.exists()
