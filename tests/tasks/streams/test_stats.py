"""Stream stats for operators: length, and per group pending, lag, oldest pending, dead letters, stuck."""

from __future__ import annotations

import time

from django.urls import reverse

from tasks.monitoring import health
from tasks.streams.stats import PROGRESS_KEY, redis_streams, stream_stats
from tests.support.monitoring import samples
from tests.support.streams import ON_SHARED_RABBITMQ, STREAM

pytestmark = ON_SHARED_RABBITMQ


def by_group(redis_client, now=None) -> dict:
    [stats] = [s for s in stream_stats(client=redis_client, now=now) if s.name == STREAM]
    return {group.name: group for group in stats.groups}, stats


def fill(redis_client, entries: int = 5) -> None:
    for n in range(entries):
        redis_client.xadd(STREAM, {"message_id": f"m{n}", "n": n})
    redis_client.xgroup_create(STREAM, "search", id="0")
    redis_client.xgroup_create(STREAM, "idle", id="$")


def test_only_streams_the_relay_appends_to_redis_are_watched(settings):
    assert STREAM in redis_streams()
    settings.STREAMS_SINKS = {STREAM: "rabbitmq"}
    assert STREAM not in redis_streams()


def test_each_group_shows_its_pending_lag_oldest_pending_and_dead_letters(redis_client):
    fill(redis_client)
    read = redis_client.xreadgroup("search", "search-1", {STREAM: ">"}, count=3)
    redis_client.xack(STREAM, "search", read[0][1][0][0])
    redis_client.xadd(f"{STREAM}:dead:search", {"message_id": "m9", "error": "boom"})
    time.sleep(0.05)

    groups, stats = by_group(redis_client)

    assert stats.length == 5
    search = groups["search"]
    assert (search.consumers, search.pending, search.lag, search.dead_letters) == (1, 2, 2, 1)
    assert search.oldest_pending_seconds >= 0.05
    assert (groups["idle"].pending, groups["idle"].lag, groups["idle"].oldest_pending_seconds) == (0, 0, None)


def test_a_group_with_work_that_acknowledges_nothing_for_the_set_minutes_is_stuck(redis_client, settings):
    settings.STREAMS_STUCK_GROUP_MINUTES = 10
    fill(redis_client)
    redis_client.xreadgroup("search", "search-1", {STREAM: ">"}, count=2)
    start = time.time()

    assert not by_group(redis_client, now=start)[0]["search"].stuck
    later, _ = by_group(redis_client, now=start + 601)
    assert later["search"].stuck and later["search"].seconds_without_progress >= 600
    assert not later["idle"].stuck  # nothing to do is not stuck

    redis_client.xack(STREAM, "search", *[e[0] for e in redis_client.xrange(STREAM, count=1)])
    assert not by_group(redis_client, now=start + 602)[0]["search"].stuck  # progress resets the clock


def test_metrics_and_readiness_report_the_groups_and_a_stuck_one_fails_the_optional_check(
    redis_client, settings, admin_client_logged_in
):
    settings.STREAMS_STUCK_GROUP_MINUTES = 0
    fill(redis_client)
    redis_client.xreadgroup("search", "search-1", {STREAM: ">"}, count=2)
    stream_stats(client=redis_client)  # remembers the progress now
    time.sleep(0.05)

    found = samples(admin_client_logged_in.get(reverse("tasks:metrics")).content.decode())
    outcome = health.check_stream_groups()

    labels = (("group", "search"), ("stream", STREAM))
    assert found[("platform_stream_length", (("stream", STREAM),))] == 5
    assert found[("platform_stream_group_pending", labels)] == 2
    assert found[("platform_stream_group_lag", labels)] == 3
    assert not outcome.healthy and f"{STREAM}/search (3 behind, 2 pending" in outcome.detail
    assert [check.required for check in health.registered_checks() if check.name == "streams"] == [False]


def test_the_status_page_lists_each_stream_and_its_groups(redis_client, admin_client_logged_in, settings):
    settings.STATUS_INSPECT_TIMEOUT = 0.3
    fill(redis_client)
    redis_client.xadd(f"{STREAM}:dead:search", {"message_id": "m9", "error": "boom"})

    page = admin_client_logged_in.get(reverse("admin:platform_status")).content.decode()

    section = page[page.index('id="status-streams"') :]
    assert STREAM in section and "search" in section and "idle" in section
    assert '<td class="status-bad">1</td>' in section  # the dead letter stands out


def test_keys_of_other_types_and_a_garbled_memory_are_tolerated(redis_client):
    redis_client.set(STREAM, "not a stream")
    assert by_group(redis_client)[1].length == 0

    redis_client.delete(STREAM)
    fill(redis_client)
    redis_client.set(f"{STREAM}:dead:search", "not a stream")
    redis_client.hset(PROGRESS_KEY, f"{STREAM}\x00search", "0 soon")

    groups, _ = by_group(redis_client)

    assert groups["search"].dead_letters == 0 and groups["search"].seconds_without_progress == 0
