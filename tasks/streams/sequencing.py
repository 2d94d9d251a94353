"""Sequencing: committed outbox rows of streamed classes become StreamEntry rows with their place.

The relay, never the request, reads the outbox for events of streamed classes (``Message.stream``)
that have no StreamEntry yet, oldest id first, and gives each the next position of its stream and
the Redis id that goes with it, in one transaction per batch under the cursor's row lock: two
relays never give out one position twice, and a relay killed mid-batch leaves no trace of it.

Order. A stream's order is the order in which the relay saw events committed: an event committed
before another of the same key was committed is visible to every read that sees the later one,
so it gets the earlier position unless both first become visible to the same read; then the
lower outbox id goes first. Outbox ids follow commit order per key when writers of one aggregate
serialise on it before registering the event (they lock or update its row, as the marketplace
services do): the second writer draws its id after the first has committed. Two transactions
that register events for one key without a common lock have no order the application chose;
the stream then has the one the relay saw.

Finding new rows cheaply. Rows with lower ids can commit after rows with higher ids, so the
relay reads everything above its cursor that has no entry yet. The cursor moves up to a
candidate id M once every transaction that could still write an id at or below M has ended: when
M is read, the transactions of this database that hold a transaction id or are running a
statement are recorded (PostgreSQL's ``pg_locks`` virtual transaction ids); a later pass that
finds none of them open reads every row up to M committed, sequences them, and moves the cursor.
On SQLite one writer at a time means nothing below the largest committed id is still open.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, Max, OuterRef

from tasks.messages import Message, registered_message_types
from tasks.models import Outbox, StreamCursor, StreamEntry, StreamPosition

logger = logging.getLogger(__name__)

# The cursor row, made on first use.
CURSOR_NAME = "outbox"

# Transactions of this database that can still make an outbox id visible: those that wrote
# (they hold a transaction id) and those running a statement (an INSERT between drawing its id
# and writing its row). Idle read-only transactions cannot.
_OPEN_WRITERS_SQL = """
SELECT l.virtualxid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'virtualxid' AND l.granted AND a.datname = current_database()
  AND l.pid <> pg_backend_pid() AND (a.backend_xid IS NOT NULL OR a.state = 'active')
"""
_STILL_OPEN_SQL = "SELECT virtualxid FROM pg_locks WHERE locktype = 'virtualxid' AND virtualxid = ANY(%s)"


def streamed_types() -> dict[str, type[Message]]:
    """Every registered message class that names a stream, by its stable name."""
    return {name: cls for name, cls in registered_message_types().items() if cls.stream}


def stream_cursor() -> StreamCursor:
    """The outbox cursor of the streams (read, not locked)."""
    return StreamCursor.objects.get_or_create(name=CURSOR_NAME)[0]


def stream_events_sequence(*, batch_size: int | None = None) -> int:
    """Give every committed, not yet sequenced event of a streamed class its stream position;
    return how many were sequenced. Moves the cursor when the candidate's writers have ended."""
    types = streamed_types()
    if not types:
        return 0
    batch_size = batch_size or settings.STREAMS_BATCH
    cursor = stream_cursor()
    # Checked before the sweep: a writer seen ended here has its rows visible to the sweep.
    ready_id = (
        cursor.candidate_id
        if cursor.candidate_id > cursor.outbox_id and not _still_open(cursor.candidate_writers)
        else None
    )
    total, after = 0, cursor.outbox_id
    while True:
        with transaction.atomic():
            StreamCursor.objects.select_for_update().get(name=CURSOR_NAME)
            rows = list(
                Outbox.objects.filter(pk__gt=after, message_type__in=list(types))
                .exclude(Exists(StreamEntry.objects.filter(message_id=OuterRef("message_id"))))
                .order_by("pk")
                .values("pk", "message_id", "message_type", "payload")[:batch_size]
            )
            if rows:
                _sequence(rows, types)
        total += len(rows)
        if len(rows) < batch_size:
            break
        after = rows[-1]["pk"]
    _move_cursor(ready_id)
    if total:
        logger.info("sequenced %d stream entries", total)
    return total


def _sequence(rows: list[dict[str, Any]], types: dict[str, type[Message]]) -> None:
    streams = {types[row["message_type"]].stream for row in rows}
    positions = {p.stream: p for p in StreamPosition.objects.filter(stream__in=streams)}
    for stream in streams - set(positions):
        positions[stream] = StreamPosition.objects.create(stream=stream)
    entries = []
    for row in rows:
        cls = types[row["message_type"]]
        position = positions[cls.stream]
        position.position += 1
        # Redis ids are <ms>-<seq>: the time of sequencing, never below the last id given out.
        now_ms = int(time.time() * 1000)
        if now_ms > position.entry_ms:
            position.entry_ms, position.entry_seq = now_ms, 0
        else:
            position.entry_seq += 1
        data = row["payload"].get("data") if isinstance(row["payload"], dict) else None
        key = data.get(cls.stream_key) if isinstance(data, dict) else None
        entries.append(
            StreamEntry(
                message_id=row["message_id"],
                outbox_id=row["pk"],
                stream=cls.stream,
                position=position.position,
                entry_id=f"{position.entry_ms}-{position.entry_seq}",
                key="" if key is None else str(key)[:200],
                message_type=row["message_type"],
                payload=row["payload"],
            )
        )
    StreamEntry.objects.bulk_create(entries)
    for position in positions.values():
        position.save(update_fields=["position", "entry_ms", "entry_seq"])


def _move_cursor(ready_id: int | None) -> None:
    """Move the cursor to the candidate this pass found ready (and swept after), if it is still
    the candidate; then record a new candidate unless one is waiting for its writers."""
    with transaction.atomic():
        cursor = StreamCursor.objects.select_for_update().get(name=CURSOR_NAME)
        before = (cursor.outbox_id, cursor.candidate_id)
        if ready_id is not None and cursor.candidate_id == ready_id > cursor.outbox_id:
            cursor.outbox_id = ready_id
        if cursor.candidate_id <= cursor.outbox_id:
            # The largest id first, then the writers: a transaction that drew an id up to it
            # did so before this read, so it is among the writers read next, or has ended.
            newest = Outbox.objects.aggregate(newest=Max("pk"))["newest"] or 0
            if newest > cursor.outbox_id:
                cursor.candidate_id = newest
                cursor.candidate_writers = _open_writers()
        if (cursor.outbox_id, cursor.candidate_id) != before:
            cursor.save(update_fields=["outbox_id", "candidate_id", "candidate_writers"])


def _open_writers() -> list[str]:
    if connection.vendor != "postgresql":
        return []
    with connection.cursor() as db:
        db.execute(_OPEN_WRITERS_SQL)
        return [row[0] for row in db.fetchall()]


def _still_open(writers: Iterable[str]) -> bool:
    writers = list(writers)
    if not writers or connection.vendor != "postgresql":
        return False
    with connection.cursor() as db:
        db.execute(_STILL_OPEN_SQL, [writers])
        return db.fetchone() is not None
