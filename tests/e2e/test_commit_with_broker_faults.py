"""A commit never waits on the broker (issue 15): with the broker healthy, refusing connections,
hung (``SIGSTOP``) or dropping packets (its network link cut), 100 commits that each register an
event return within 50 ms of their own database work (p99); then, the broker back, a real relay
and worker deliver every event once.

"Its own database work" is the time the commit's queries spend in the database driver, summed
by a Django execute wrapper; the bound applies to the rest of the commit's wall time (the
on-commit hooks, the sync handlers, handing the deliveries to the publisher thread).
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import time
from collections.abc import Callable, Iterator

import pytest
from django.conf import settings
from django.db import connection, transaction

from tasks.models import Outbox
from tasks.transaction import register_event
from tests.e2e.conftest import fast_recovery_env
from tests.support.broker import publishing_to
from tests.support.ledger.handlers import LedgerEvent, effects_summary
from tests.support.netns import NetnsHost, PrivateRedis, in_namespace, netns_host, netns_unavailable
from tests.support.outage import StoppableBroker
from tests.support.processes import CeleryWorker, ManagedProcess, Relay
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.broker, pytest.mark.serial]

COMMITS = 100
BOUND = 0.050  # seconds beyond the commit's own database work, p99


class DatabaseTime:
    """Sums the time the connection's queries take (an execute wrapper)."""

    def __init__(self) -> None:
        self.total = 0.0

    def __call__(self, execute: Callable, sql: str, params: object, many: bool, context: dict) -> object:
        start = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.total += time.perf_counter() - start


def commit_overheads(prefix: str) -> list[float]:
    """Commit ``COMMITS`` transactions that each register an event; for each, its wall time
    minus its database time."""
    overheads = []
    for i in range(COMMITS):
        database = DatabaseTime()
        with connection.execute_wrapper(database):
            start = time.perf_counter()
            with transaction.atomic():
                register_event(LedgerEvent(key=f"{prefix}{i}"))
            wall = time.perf_counter() - start
        overheads.append(wall - database.total)
    return overheads


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


@contextlib.contextmanager
def delivering(broker_url: str) -> Iterator[tuple[ManagedProcess, ...]]:
    """A real worker and relay on ``broker_url``, with a short relay grace."""
    env = fast_recovery_env(CELERY_BROKER_URL=broker_url)
    with contextlib.ExitStack() as stack:
        yield stack.enter_context(CeleryWorker(env=env)), stack.enter_context(Relay(env=env))


def assert_every_event_delivered_once(broker_url: str, processes: tuple[ManagedProcess, ...]) -> None:
    def describe() -> str:
        logs = "".join(f"\n--- {p.name} ---\n{p.log()[-2000:]}" for p in processes)
        return f"effects {effects_summary()}, unsent {Outbox.objects.filter(sent_at__isnull=True).count()}{logs}"

    wait_until(lambda: effects_summary()[0] == COMMITS, timeout=90, message=describe)
    time.sleep(1)  # a second copy, if one were on its way, would land now
    distinct, twice = effects_summary()
    assert (COMMITS - distinct, twice) == (0, 0), describe()


def run_with_fault(broker_url: str, *, fault: Callable[[], None], repair: Callable[[], None]) -> list[float]:
    with publishing_to(broker_url):
        fault()
        try:
            overheads = commit_overheads("e")
        finally:
            repair()
    with delivering(broker_url) as processes:
        assert_every_event_delivered_once(broker_url, processes)
    return overheads


def assert_bounded(overheads: list[float]) -> None:
    worst = sorted(overheads)[-5:]
    assert p99(overheads) <= BOUND, f"p99 {p99(overheads) * 1000:.1f} ms beyond database work; worst {worst}"


def signal_group(process: ManagedProcess, signum: int) -> None:
    """``signum`` to the process and its children (socat serves each connection in a child)."""
    os.killpg(process.proc.pid, signum)


@pytest.fixture
def broker(clean_broker) -> Iterator[StoppableBroker]:
    """A broker of this test's own (Redis: a private server; RabbitMQ: a proxy to the shared one)."""
    stoppable = StoppableBroker().start()
    yield stoppable
    with contextlib.suppress(ProcessLookupError):
        signal_group(stoppable.process, signal.SIGCONT)
    stoppable.stop()


def test_commits_are_bounded_and_delivered_once_with_a_healthy_broker(broker):
    overheads = run_with_fault(broker.url, fault=lambda: None, repair=lambda: None)
    assert_bounded(overheads)


def test_commits_are_bounded_and_delivered_once_when_the_broker_refuses_connections(broker):
    overheads = run_with_fault(broker.url, fault=broker.stop, repair=broker.start)
    assert_bounded(overheads)


def test_commits_are_bounded_and_delivered_once_when_the_broker_hangs(broker):
    overheads = run_with_fault(
        broker.url,
        fault=lambda: signal_group(broker.process, signal.SIGSTOP),
        repair=lambda: signal_group(broker.process, signal.SIGCONT),
    )
    assert_bounded(overheads)


@pytest.fixture
def unreachable_redis(clean_broker) -> Iterator[tuple[NetnsHost, PrivateRedis]]:
    if not settings.CELERY_BROKER_URL.startswith("redis"):
        pytest.skip("the cut link is tested with a private Redis in a network namespace")
    if reason := netns_unavailable():
        pytest.skip(f"needs network namespaces: {reason}")
    with netns_host() as host, in_namespace(PrivateRedis(host.host_address, port=6379), host) as redis:
        yield host, redis


def test_commits_are_bounded_and_delivered_once_when_the_broker_drops_packets(unreachable_redis):
    host, redis = unreachable_redis
    overheads = run_with_fault(redis.url, fault=host.cut, repair=host.restore)
    assert_bounded(overheads)
