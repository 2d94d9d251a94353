"""Fewer database round trips for the platform's own writes, which run for every event.

On PostgreSQL with client-side binding (Django's default for psycopg 3), a query with several
statements goes out as one simple query: one round trip, and without an explicit BEGIN it runs
as one implicit transaction, rolled back whole on error. Elsewhere (SQLite, server-side binding)
each statement is sent on its own, with the same effect.

- ``execute_with_async_commit``: bookkeeping writes that only save work if they survive a crash
  (an outbox row marked sent: lost, the relay sends the event again; a delivery's start
  counted: lost, a poison message gets one more try) commit with ``synchronous_commit = off``,
  in one round trip instead of four (BEGIN, SET, statement, COMMIT).
- ``insert_together``: an event's outbox row and its Delivery rows in one round trip.
- ``execute_together``: statements of one transaction in one round trip (a delivery's done mark
  and its task result).
"""

from __future__ import annotations

from typing import Any

import psycopg
from django.db import InterfaceError, OperationalError, connection
from django.db.backends.utils import CursorWrapper
from django.db.models import Model, QuerySet
from django.db.models.constants import OnConflict
from django.db.models.sql import InsertQuery, UpdateQuery


def _one_query_for_several(cursor: CursorWrapper) -> bool:
    return connection.vendor == "postgresql" and isinstance(cursor.cursor, psycopg.ClientCursor)


def execute_with_async_commit(sql: str, params: list[Any], *, skip_health_check: bool = False) -> list[tuple]:
    """Run one statement on its own (or in the caller's transaction); return its rows, if any.

    The async commit applies only outside a transaction on PostgreSQL with client-side binding;
    anywhere else the statement runs as it is, in autocommit or in the enclosing transaction.

    ``skip_health_check``: a reused connection is not pinged first (``CONN_HEALTH_CHECKS``, a
    round trip of its own); if it turns out broken, it is replaced and the statement sent once
    more. Only for statements that may run twice when a connection dies after the server ran
    them (a counter that may count once too often).
    """
    if skip_health_check and connection.connection is not None and not connection.in_atomic_block:
        connection.health_check_done = True
        try:
            return _execute_with_async_commit(sql, params)
        except (InterfaceError, OperationalError):
            if connection.is_usable():
                raise  # the statement's own error, not the connection's
            connection.close()
    return _execute_with_async_commit(sql, params)


def _execute_with_async_commit(sql: str, params: list[Any]) -> list[tuple]:
    with connection.cursor() as cursor:
        if _one_query_for_several(cursor) and not connection.in_atomic_block:
            cursor.execute(f"SET LOCAL synchronous_commit = off; {sql}", params)
            cursor.nextset()  # past the SET's empty result, to the statement's
        else:
            cursor.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


def execute_together(statements: list[tuple[str, list[Any]]]) -> list[int]:
    """Run ``statements`` (SQL and parameters) in order, in the caller's transaction, in one
    round trip where the database allows; return each one's row count."""
    with connection.cursor() as cursor:
        if not (len(statements) > 1 and _one_query_for_several(cursor)):
            counts = []
            for sql, params in statements:
                cursor.execute(sql, params)
                counts.append(cursor.rowcount)
            return counts
        cursor.execute("; ".join(sql for sql, _ in statements), [p for _, params in statements for p in params])
        counts = [cursor.rowcount]
        while cursor.nextset():
            counts.append(cursor.rowcount)
        return counts


def update_sql(queryset: QuerySet, values: dict[str, Any]) -> tuple[str, list[Any]]:
    """The UPDATE ``queryset.update(**values)`` would run, compiled by Django, not run."""
    query = queryset.query.chain(UpdateQuery)
    query.add_update_values(values)
    sql, params = query.get_compiler(connection=connection).as_sql()
    return sql, list(params)


def upsert_sql(obj: Model, *, unique_fields: list[str], update_fields: list[str]) -> tuple[str, list[Any]]:
    """The INSERT ... ON CONFLICT DO UPDATE ``bulk_create([obj], update_conflicts=True, ...)``
    would run, not run."""
    return _insert_sql([obj], on_conflict=OnConflict.UPDATE, unique_fields=unique_fields, update_fields=update_fields)


def _insert_sql(
    objs: list[Model],
    *,
    returning_pk: bool = False,
    ignore_conflicts: bool = False,
    on_conflict: OnConflict | None = None,
    unique_fields: list[str] | None = None,
    update_fields: list[str] | None = None,
) -> tuple[str, list]:
    # Django's own INSERT compiler: the same columns, defaults and value adaptation as save()
    # and bulk_create(), so the SQL follows the models.
    model = type(objs[0])
    fields = [f for f in model._meta.local_concrete_fields if f is not model._meta.auto_field]
    opts = model._meta
    query = InsertQuery(
        model,
        on_conflict=OnConflict.IGNORE if ignore_conflicts else on_conflict,
        update_fields=[opts.get_field(name) for name in update_fields or ()],
        unique_fields=[opts.get_field(name) for name in unique_fields or ()],
    )
    query.insert_values(fields, objs)
    compiler = query.get_compiler(connection=connection)
    if returning_pk:
        compiler.returning_fields = [model._meta.pk]
    [(sql, params)] = compiler.as_sql()
    return sql, list(params)


def insert_together(row: Model, others: list[Model]) -> None:
    """Insert ``row`` (its primary key is set) and ``others`` (ignoring conflicts, as
    ``bulk_create(ignore_conflicts=True)``), in one round trip where the database allows."""
    with connection.cursor() as cursor:
        if not (others and _one_query_for_several(cursor)):
            row.save(force_insert=True)
            if others:
                type(others[0]).objects.bulk_create(others, ignore_conflicts=True)
            return
        row_sql, row_params = _insert_sql([row], returning_pk=True)
        others_sql, others_params = _insert_sql(others, ignore_conflicts=True)
        cursor.execute(f"{row_sql}; {others_sql}", [*row_params, *others_params])
        row.pk = cursor.fetchone()[0]  # the first statement's result
        row._state.adding = False


def insert_unless_conflicting(row: Model) -> bool:
    """Insert ``row`` unless a unique constraint (partial ones included) already holds one like
    it: one statement, no savepoint; True (and its primary key set) if it was inserted."""
    sql, params = _insert_sql([row], ignore_conflicts=True, returning_pk=True)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        found = cursor.fetchone()
    if found is None:
        return False
    row.pk = found[0]
    row._state.adding = False
    return True
