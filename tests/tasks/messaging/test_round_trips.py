"""``execute_with_async_commit``: one round trip, committed on its own, rolled back whole on error,
and part of the caller's transaction when there is one. ``insert_together``: an outbox row and
its Delivery rows in one round trip, conflicts ignored as ``bulk_create`` does."""

import uuid

import pytest
from django.db import DatabaseError, connection, transaction
from django.test.utils import CaptureQueriesContext

from tasks.messaging.round_trips import execute_with_async_commit, insert_together
from tasks.models import Delivery, Outbox
from tests.support.connections import other_connection

ON_POSTGRES = connection.vendor == "postgresql"
BUMP = f"UPDATE {Outbox._meta.db_table} SET attempts = attempts + %s WHERE id = %s RETURNING attempts"


def _outbox_row() -> Outbox:
    return Outbox.objects.create(message_id=uuid.uuid4(), message_type="tests.Example", payload={})


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_it_commits_and_returns_the_rows():
    row = _outbox_row()
    with CaptureQueriesContext(connection) as queries:
        assert execute_with_async_commit(BUMP, [2, row.pk]) == [(2,)]
    assert len(queries) == 1  # one round trip, SET LOCAL included
    assert ("SET LOCAL synchronous_commit = off" in queries[0]["sql"]) is ON_POSTGRES
    assert not connection.in_atomic_block
    row.refresh_from_db()
    assert row.attempts == 2


@pytest.mark.skipif(not ON_POSTGRES, reason="synchronous_commit is a PostgreSQL setting")
@pytest.mark.django_db(transaction=True)
def test_the_async_commit_does_not_leak_into_the_session():
    execute_with_async_commit(BUMP, [1, _outbox_row().pk])
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone() == ("on",)


@pytest.mark.django_db(transaction=True)
def test_a_failing_statement_changes_nothing_and_leaves_the_connection_usable():
    row = _outbox_row()
    failing = f"UPDATE {Outbox._meta.db_table} SET attempts = attempts + 1 / (attempts - %s) WHERE id = %s"
    with pytest.raises(DatabaseError):
        execute_with_async_commit(failing, [0, row.pk])  # 1 / 0
    row.refresh_from_db()
    assert row.attempts == 0
    assert execute_with_async_commit(BUMP, [1, row.pk]) == [(1,)]


@pytest.mark.django_db(transaction=True)
def test_inside_a_transaction_it_is_part_of_it():
    row = _outbox_row()
    with CaptureQueriesContext(connection) as queries, transaction.atomic():
        assert execute_with_async_commit(BUMP, [5, row.pk]) == [(5,)]
        transaction.set_rollback(True)
    # The caller's transaction decides: no SET LOCAL that would make its commit asynchronous.
    assert not any("SET LOCAL" in q["sql"] for q in queries)
    row.refresh_from_db()
    assert row.attempts == 0


@pytest.mark.django_db(transaction=True)
def test_a_statement_without_rows_returns_an_empty_list():
    row = _outbox_row()
    sql = f"UPDATE {Outbox._meta.db_table} SET attempts = %s WHERE id = %s"
    assert execute_with_async_commit(sql, [3, row.pk]) == []
    row.refresh_from_db()
    assert row.attempts == 3


def _delivery(message_id: uuid.UUID, handler: str) -> Delivery:
    return Delivery(message_id=message_id, handler=handler, message_type="tests.Example", payload={}, queue="low")


@pytest.mark.django_db
def test_insert_together_inserts_the_row_and_the_others_in_one_query():
    row = Outbox(message_id=uuid.uuid4(), message_type="tests.Example", payload={"a": 1})
    others = [_delivery(row.message_id, "h.one"), _delivery(row.message_id, "h.two")]
    with CaptureQueriesContext(connection) as queries:
        insert_together(row, others)
    inserts = [q["sql"] for q in queries if "INSERT" in q["sql"]]
    assert len(inserts) == (1 if ON_POSTGRES else 2)
    stored = Outbox.objects.get(pk=row.pk)
    assert (stored.message_id, stored.payload, stored.sent_at) == (row.message_id, {"a": 1}, None)
    assert stored.created_at is not None  # auto_now_add applied, as save() does
    assert not row._state.adding
    assert sorted(Delivery.objects.filter(message_id=row.message_id).values_list("handler", "status")) == [
        ("h.one", Delivery.Status.PENDING),
        ("h.two", Delivery.Status.PENDING),
    ]


@pytest.mark.django_db
def test_insert_together_keeps_a_delivery_recorded_before():
    message_id = uuid.uuid4()
    first = _delivery(message_id, "h.one")
    first.status = Delivery.Status.DONE
    first.save()
    insert_together(
        Outbox(message_id=message_id, message_type="tests.Example", payload={}), [_delivery(message_id, "h.one")]
    )
    assert list(Delivery.objects.filter(message_id=message_id).values_list("status", flat=True)) == ["done"]


@pytest.mark.django_db
def test_insert_together_without_others_inserts_the_row():
    row = Outbox(message_id=uuid.uuid4(), message_type="tests.Example", payload={})
    insert_together(row, [])
    assert Outbox.objects.filter(pk=row.pk, message_id=row.message_id).exists()


# --- skip_health_check ------------------------------------------------------------------------------


@pytest.fixture
def health_checks(settings):
    """Health checks on for the test's connection, as in production (CONN_HEALTH_CHECKS)."""
    saved = connection.health_check_enabled
    connection.health_check_enabled = True
    yield
    connection.health_check_enabled = saved


@pytest.mark.skipif(not ON_POSTGRES, reason="needs a server that can drop the connection")
@pytest.mark.django_db(transaction=True)
def test_without_the_health_check_a_reused_connection_is_not_pinged_first(health_checks):
    row = _outbox_row()
    connection.health_check_done = False
    with CaptureQueriesContext(connection) as queries:
        execute_with_async_commit(BUMP, [1, row.pk], skip_health_check=True)
    assert len(queries) == 1
    assert connection.health_check_done  # the next query in this task is not pinged either


@pytest.mark.skipif(not ON_POSTGRES, reason="needs a server that can drop the connection")
@pytest.mark.django_db(transaction=True)
def test_without_the_health_check_a_connection_the_server_dropped_is_replaced_and_the_statement_sent_again(
    health_checks,
):
    row = _outbox_row()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (old_pid,) = cursor.fetchone()
    with other_connection() as other, other.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [old_pid])

    assert execute_with_async_commit(BUMP, [3, row.pk], skip_health_check=True) == [(3,)]
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        assert cursor.fetchone()[0] != old_pid


@pytest.mark.skipif(not ON_POSTGRES, reason="needs a server that can drop the connection")
@pytest.mark.django_db(transaction=True)
def test_without_the_health_check_an_error_of_the_statement_itself_is_raised_once():
    with CaptureQueriesContext(connection) as queries, pytest.raises(DatabaseError):
        execute_with_async_commit("SELECT 1 / 0", [], skip_health_check=True)
    assert [q["sql"] for q in queries].count("SET LOCAL synchronous_commit = off; SELECT 1 / 0") == 1
