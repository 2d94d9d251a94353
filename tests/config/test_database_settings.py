"""The PostgreSQL session bounds (config/database.py): what is sent, what the server applies,
and that the defaults fit the task time limits. The lost host itself: e2e/test_lost_worker_host.py."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest
from django.conf import settings
from django.db import connection

from config.database import SessionBounds, postgres_session_options
from tests.config.test_production_settings import ROOT

BOUNDS = SessionBounds(
    idle_in_transaction_timeout=45,
    lock_timeout=20,
    keepalives_idle=10,
    keepalives_interval=5,
    keepalives_count=4,
    tcp_user_timeout=30,
    client_connection_check_interval=5,
    connect_timeout=10,
)


def test_every_bound_is_sent_to_the_server_and_to_libpq():
    options = postgres_session_options({}, BOUNDS)

    assert options["options"].split(" -c ") == [
        "-c idle_in_transaction_session_timeout=45s",
        "lock_timeout=20s",
        "tcp_keepalives_idle=10",
        "tcp_keepalives_interval=5",
        "tcp_keepalives_count=4",
        "tcp_user_timeout=30s",
        "client_connection_check_interval=5s",
    ]
    assert {k: v for k, v in options.items() if k != "options"} == {
        "connect_timeout": 10,
        "tcp_user_timeout": 30000,  # libpq counts milliseconds
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 4,
    }


def test_options_from_the_database_url_win_over_the_defaults():
    given = {"options": "-c lock_timeout=5s", "connect_timeout": 3, "sslmode": "require"}

    options = postgres_session_options(given, BOUNDS)

    # Later -c settings override earlier ones, so the URL's come last.
    assert options["options"].startswith("-c idle_in_transaction_session_timeout=45s")
    assert options["options"].rsplit(" -c ", 1)[1] == "lock_timeout=5s"
    assert (options["connect_timeout"], options["sslmode"]) == (3, "require")


def test_a_bound_of_zero_is_left_out():
    off = dataclasses.replace(BOUNDS, lock_timeout=0, keepalives_idle=0, tcp_user_timeout=0)

    options = postgres_session_options({}, off)

    assert "lock_timeout" not in options["options"]
    assert "tcp_keepalives_idle" not in options["options"]
    assert "tcp_user_timeout" not in options["options"] and "tcp_user_timeout" not in options
    assert "keepalives" not in options
    all_off = SessionBounds(**dict.fromkeys(BOUNDS.__dataclass_fields__, 0))
    assert postgres_session_options({"sslmode": "prefer"}, all_off) == {"sslmode": "prefer"}


def test_the_defaults_never_cut_healthy_work_short_and_release_a_lost_host_within_60_seconds():
    bounds = settings.DATABASE_SESSION_BOUNDS
    # A healthy task is idle in its transaction at most until its hard time limit kills it.
    assert bounds.idle_in_transaction_timeout > settings.CELERY_TASK_TIME_LIMIT
    assert bounds.idle_in_transaction_timeout <= 60
    # A task waiting on a lock gives up before its soft time limit interrupts the wait.
    assert 0 < bounds.lock_timeout < settings.CELERY_TASK_SOFT_TIME_LIMIT
    silent_peer = bounds.keepalives_idle + bounds.keepalives_interval * bounds.keepalives_count
    assert max(silent_peer, bounds.tcp_user_timeout) <= 60


@pytest.mark.django_db
def test_the_server_applies_the_bounds_to_this_session():
    if connection.vendor != "postgresql":
        pytest.skip("the bounds are PostgreSQL session settings")
    bounds = settings.DATABASE_SESSION_BOUNDS
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT current_setting('idle_in_transaction_session_timeout'), current_setting('lock_timeout'), "
            "current_setting('client_connection_check_interval')"
        )
        assert cursor.fetchone() == (
            f"{bounds.idle_in_transaction_timeout}s",
            f"{bounds.lock_timeout}s",
            f"{bounds.client_connection_check_interval}s",
        )


def _options_for(database_url: str) -> dict:
    script = "import json; from config import settings; print(json.dumps(settings.DATABASES['default']['OPTIONS']))"
    env = {**os.environ, "DATABASE_URL": database_url, "DEBUG": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(result.stdout)


def test_sqlite_keeps_its_own_options():
    options = _options_for("sqlite:////tmp/never-opened.sqlite3")

    assert "options" not in options and "keepalives" not in options
    assert options["transaction_mode"] == "IMMEDIATE"
