"""A worker host cut off from the network mid-handler (issue 14, item 7).

The worker runs in a network namespace ("the lost host") and reaches a private PostgreSQL and
Redis over a veth link; a second worker runs in the root namespace ("the healthy host"). The
lost host's handler holds the Delivery row lock (its ``done`` claim, uncommitted) when its link
goes down: no FIN, no RST, its backend simply waits for a next command that never comes. The
session bounds in ``config/database.py`` must end that session within 60 s, and a re-sent copy
of the delivery must meanwhile give up on the lock cleanly, then run once.

Not marked ``broker``: the broker here is the test's own Redis on the veth link, and what is
under test is the database's handling of a lost client, the same on every broker.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from config.celery_app import app
from tasks.messaging.deliveries import DELIVER_TASK
from tasks.models import Delivery
from tasks.queues import DEFAULT, HIGH_PRIORITY
from tests.support.ledger.handlers import LedgerEvent
from tests.support.netns import (
    NetnsHost,
    PrivatePostgres,
    PrivateRedis,
    in_namespace,
    netns_host,
    netns_unavailable,
    private_postgres,
)
from tests.support.processes import ROOT, CeleryWorker, process_env
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.slow]

HANDLER = "tests.support.ledger.handlers.slow_until_flag"
LOST, HEALTHY = "lost-host", "healthy-host"  # the workers' application_name (PGAPPNAME)
RELEASE_BOUND = 60  # seconds: the bound from the cut to the lock's release


@dataclass
class Lab:
    host: NetnsHost
    postgres: PrivatePostgres
    database_url: str
    broker_url: str

    def env(self, application_name: str) -> dict[str, str]:
        """A worker's environment: the private servers, production defaults otherwise."""
        return process_env(
            DATABASE_URL=self.database_url, CELERY_BROKER_URL=self.broker_url, PGAPPNAME=application_name
        )


@pytest.fixture
def lab() -> Iterator[Lab]:
    """A namespace host, and a PostgreSQL (migrated) and Redis of the test's own on its link."""
    if reason := netns_unavailable():
        pytest.skip(f"needs network namespaces: {reason}")
    with contextlib.ExitStack() as stack:
        host = stack.enter_context(netns_host())
        postgres = stack.enter_context(private_postgres(host.root_address, host.network))
        redis = stack.enter_context(PrivateRedis(host.root_address))
        database_url = postgres.create_database("lab")
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--run-syncdb", "--noinput", "-v", "0"],
            check=True, cwd=ROOT, env=process_env(DATABASE_URL=database_url), timeout=300,
        )  # fmt: skip
        yield Lab(host, postgres, database_url, redis.url)


@dataclass
class Observer:
    """Reads the private database without taking locks; records what it saw over time."""

    lab: Lab
    max_unfinished_starts: int = 0
    max_healthy_sessions: int = 0
    notes: list[str] = field(default_factory=list)

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self.lab.postgres.connect("lab") as conn:
            return conn.execute(sql, params).fetchall()

    def delivery(self) -> tuple | None:
        rows = self.query("SELECT status, unfinished_starts, attempts FROM tasks_delivery")
        return rows[0] if rows else None

    def lock_holder(self) -> int | None:
        """The lost host's backend while it holds the Delivery row in an open transaction."""
        rows = self.query(
            "SELECT a.pid FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid "
            "WHERE a.application_name = %s AND a.state = 'idle in transaction' AND a.backend_xid IS NOT NULL "
            "AND l.relation = 'tasks_delivery'::regclass AND l.mode = 'RowExclusiveLock'",
            (LOST,),
        )
        return rows[0][0] if rows else None

    def sample(self) -> None:
        """Remember the highest start count and healthy-host session count seen."""
        if delivery := self.delivery():
            self.max_unfinished_starts = max(self.max_unfinished_starts, delivery[1])
        [(sessions,)] = self.query("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (HEALTHY,))
        self.max_healthy_sessions = max(self.max_healthy_sessions, sessions)

    def backend_gone(self, pid: int) -> bool:
        self.sample()
        return not self.query(
            "SELECT 1 FROM pg_locks WHERE pid = %s UNION SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid, pid)
        )

    def sessions(self) -> dict[str, int]:
        rows = self.query("SELECT application_name, count(*) FROM pg_stat_activity WHERE datname = 'lab' GROUP BY 1")
        return dict(rows)

    def lock_waiters(self) -> int:
        [(count,)] = self.query("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
        return count


class _Killed:
    def __init__(self, process: CeleryWorker) -> None:
        self.process = process

    def close(self) -> None:
        self.process.kill()


def _send_copy(lab: Lab, payload: dict, *, queue: str, task_id: str) -> None:
    # As the sweeper re-sends a delivery: the deliver task with the row's task id. The queue only
    # steers each copy to the host under test (the lost host consumes HIGH, the healthy DEFAULT).
    with app.connection_for_write(lab.broker_url) as connection:
        app.send_task(
            DELIVER_TASK,
            args=(payload, HANDLER),
            queue=queue,
            task_id=task_id,
            connection=connection,
            ignore_result=True,
        )


def test_a_worker_host_cut_off_mid_handler_releases_its_lock_within_60_seconds(lab, tmp_path):
    flag = Path(tmp_path / "quick.flag")
    event = LedgerEvent(key="cut-off", mode="slow", work_seconds=600, flag_path=str(flag))
    payload = event.to_json()
    observer = Observer(lab)
    lost = in_namespace(CeleryWorker(queues=HIGH_PRIORITY, concurrency=1, env=lab.env(LOST)), lab.host)
    healthy = CeleryWorker(queues=DEFAULT, concurrency=1, env=lab.env(HEALTHY))
    # A lost host is gone for good: it is killed at the end, never stopped with a grace period.
    with contextlib.closing(_Killed(lost.start())), healthy:
        # The lost host takes the delivery: it counts its start, claims the row (status done,
        # uncommitted: the row lock) and sleeps in the handler, idle in its transaction.
        _send_copy(lab, payload, queue=HIGH_PRIORITY, task_id="lost-copy")
        holder = wait_until(observer.lock_holder, timeout=60, message=lambda: lost.log()[-3000:])
        assert observer.delivery() == (Delivery.Status.RUNNING, 1, 1)
        flag.touch()  # from now on the handler is quick: the healthy host's run ends at once

        lab.host.cut()
        cut_at = time.monotonic()
        _send_copy(lab, payload, queue=DEFAULT, task_id="resent-copy")

        wait_until(
            lambda: observer.backend_gone(holder),
            timeout=RELEASE_BOUND + 15,
            interval=0.5,
            message=lambda: f"the lost host's backend {holder} still holds its locks\n{lab.postgres.log()[-3000:]}",
        )
        released_after = time.monotonic() - cut_at
        ended_by = [line for line in lab.postgres.log().splitlines() if f"[{holder}]" in line]
        print(f"\nlost host's lock released {released_after:.1f} s after the cut; server log: {ended_by}")
        assert released_after <= RELEASE_BOUND

        wait_until(
            lambda: (observer.sample(), observer.delivery())[1] == (Delivery.Status.DONE, 0, 2),
            timeout=90,
            message=lambda: f"{observer.delivery()}\n{healthy.log()[-3000:]}",
        )
        # The re-sent copy gave up on the lock and was retried; it did not queue behind it.
        assert "canceling statement due to lock timeout" in healthy.log()
        assert observer.lock_waiters() == 0
        assert LOST not in observer.sessions()
        assert observer.max_healthy_sessions <= 2  # its main process and its one pool process
        print(f"healthy host: at most {observer.max_healthy_sessions} sessions; {observer.sessions()}")

    # One start counted per host that ran the handler (attempts 2): the wait that gave up was not.
    assert observer.max_unfinished_starts <= 2
    assert observer.query("SELECT count(*) FROM tasks_deadletter") == [(0,)]
    effects = observer.query("SELECT count(*) FROM ledger_effect WHERE key = %s", (event.key,))
    assert effects == [(1,)]  # lost 0, applied twice 0
