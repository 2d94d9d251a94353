"""Bounds on every PostgreSQL session, so a lost host cannot hold its locks for hours.

A worker host cut off from the network mid-handler leaves its backend waiting for the client's
next command, idle in a transaction that holds row locks. Nothing on the server notices a silent
peer by default: the operating system gives up on the connection after about two hours. The
bounds below are sent with every connection (``settings.DATABASES``), so web, workers, relay and
Beat all have them:

- a backend waiting for a lost client's next command: the server's TCP keepalives find the
  peer silent (``tcp_keepalives_*``), and ``idle_in_transaction_session_timeout`` ends the
  session in any case, so the lock goes within about 45 s;
- a backend sending to a lost client (keepalives are not sent while data is unacknowledged):
  ``tcp_user_timeout`` drops the connection;
- a backend running a query for a client that is gone: ``client_connection_check_interval``;
- a session waiting on a lock held by a lost host: ``lock_timeout`` makes it fail (and its task
  retry) instead of waiting until its task is killed, which would leave the wait behind to
  commit its statement when the lock clears.

The client side (libpq) gets keepalives, a user timeout and a connect timeout too, so a worker
notices a lost database server. A value of 0 leaves that bound out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SessionBounds:
    """The bounds, in seconds (0: not set)."""

    idle_in_transaction_timeout: int
    lock_timeout: int
    keepalives_idle: int
    keepalives_interval: int
    keepalives_count: int
    tcp_user_timeout: int
    client_connection_check_interval: int
    connect_timeout: int


def postgres_session_options(options: dict[str, Any], bounds: SessionBounds) -> dict[str, Any]:
    """``options`` (the ``OPTIONS`` of a PostgreSQL database) with ``bounds`` added.

    What ``options`` sets already wins: a libpq parameter given in ``DATABASE_URL`` is kept, and
    its ``options`` string comes after ours, so its ``-c`` settings override ours.
    """
    server = {
        "idle_in_transaction_session_timeout": _seconds(bounds.idle_in_transaction_timeout),
        "lock_timeout": _seconds(bounds.lock_timeout),
        "tcp_keepalives_idle": bounds.keepalives_idle,
        "tcp_keepalives_interval": bounds.keepalives_interval,
        "tcp_keepalives_count": bounds.keepalives_count,
        "tcp_user_timeout": _seconds(bounds.tcp_user_timeout),
        "client_connection_check_interval": _seconds(bounds.client_connection_check_interval),
    }
    client: dict[str, Any] = {
        "connect_timeout": bounds.connect_timeout,
        # libpq's tcp_user_timeout is in milliseconds.
        "tcp_user_timeout": bounds.tcp_user_timeout * 1000,
    }
    if bounds.keepalives_idle:
        client |= {
            "keepalives": 1,
            "keepalives_idle": bounds.keepalives_idle,
            "keepalives_interval": bounds.keepalives_interval,
            "keepalives_count": bounds.keepalives_count,
        }
    merged = {name: value for name, value in client.items() if value} | options
    flags = [f"-c {name}={value}" for name, value in server.items() if value]
    given = options.get("options", "")
    if flags or given:
        merged["options"] = " ".join([*flags, given]).strip()
    return merged


def _seconds(value: int) -> str | int:
    # An explicit unit: PostgreSQL reads a bare number as milliseconds for most of these.
    return f"{value}s" if value else 0
