"""Bookkeeping writes whose commit does not wait for the disk, in one round trip.

Some platform writes only save work if they survive a crash: an outbox row marked sent (lost,
the relay sends the event again) or a delivery's start counted (lost, a poison message gets
one more try). On PostgreSQL they commit with ``synchronous_commit = off`` and are sent as one
simple query, ``SET LOCAL ...; <statement>``, which PostgreSQL runs as one implicit transaction
(rolled back whole on error): one round trip instead of four (BEGIN, SET, statement, COMMIT).
"""

from __future__ import annotations

from typing import Any

import psycopg
from django.db import connection


def execute_with_async_commit(sql: str, params: list[Any]) -> list[tuple]:
    """Run one statement on its own (or in the caller's transaction); return its rows, if any.

    The async commit applies only outside a transaction on PostgreSQL with client-side binding
    (Django's default, which allows several statements in one query); anywhere else the
    statement runs as it is, in autocommit or in the enclosing transaction.
    """
    with connection.cursor() as cursor:
        fast = (
            connection.vendor == "postgresql"
            and not connection.in_atomic_block
            and isinstance(cursor.cursor, psycopg.ClientCursor)
        )
        if not fast:
            cursor.execute(sql, params)
            return cursor.fetchall() if cursor.description else []
        cursor.execute(f"SET LOCAL synchronous_commit = off; {sql}", params)
        cursor.nextset()  # past the SET's empty result, to the statement's
        return cursor.fetchall() if cursor.description else []
