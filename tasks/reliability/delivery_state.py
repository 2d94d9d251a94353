"""The delivery state machine: the one module that changes ``Delivery.status``.

    pending --start--> running --finish--> done          (done is terminal)
    pending|running|unplanned --kill--> dead --requeue--> pending
    running --release (a clean failure, a retry waits)--> pending
    running --give_back (the platform interrupted it)--> pending, its start uncounted
    pending|running --postpone (this worker cannot run it yet)--> pending, sent later
    unplanned --plan--> pending (the relay's: a predicate that failed, asked again)
    delayed --release_due--> pending (the relay's, when due; ``tasks.reliability.delayed``)
    pending --hold--> delayed (a release the broker refused, given back)
    pending|running --claim--> running (a slot of its concurrency limit taken; ``flow_limits``)
    pending|running --wait--> waiting (over its rate or concurrency limit; ``flow_limits``)
    waiting --release_waiting--> pending (the relay's, when its limit allows)
    pending --wait_again--> waiting (a release the broker refused, given back)
    delayed|waiting|pending --cancel--> cancelled (terminal: a stale copy finds it not startable)
    running --stop--> cancelled (its handler stopped on a cancel request: ``JobCancelled``)

Every transition is one conditional UPDATE (``filter(status__in=allowed).update(...)``): two
processes racing for the same row serialise on its lock, the loser's WHERE no longer matches,
and its transition does nothing. Each function says whether it won.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from tasks.messaging.round_trips import execute_together, execute_with_async_commit, update_sql
from tasks.models import Delivery, DeliveryCancelRequest

Status = Delivery.Status
Statement = tuple[str, list[Any]]  # SQL and its parameters

# The states each transition may start from; anything else is a lost race or a stale copy.
TRANSITIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "start": ((Status.PENDING, Status.RUNNING), Status.RUNNING),
    "finish": ((Status.PENDING, Status.RUNNING), Status.DONE),
    "release": ((Status.RUNNING,), Status.PENDING),
    "give_back": ((Status.RUNNING,), Status.PENDING),
    "postpone": ((Status.PENDING, Status.RUNNING), Status.PENDING),
    "kill": ((Status.PENDING, Status.RUNNING, Status.UNPLANNED), Status.DEAD),
    "plan": ((Status.UNPLANNED,), Status.PENDING),
    "requeue": ((Status.DEAD,), Status.PENDING),
    "cancel": ((Status.DELAYED, Status.WAITING, Status.PENDING), Status.CANCELLED),
    "stop": ((Status.RUNNING,), Status.CANCELLED),
    "release_due": ((Status.DELAYED,), Status.PENDING),
    "hold": ((Status.PENDING,), Status.DELAYED),
    "claim": ((Status.PENDING, Status.RUNNING), Status.RUNNING),
    "wait": ((Status.PENDING, Status.RUNNING), Status.WAITING),
    "release_waiting": ((Status.WAITING,), Status.PENDING),
    "wait_again": ((Status.PENDING,), Status.WAITING),
}


def _from(transition: str) -> tuple[str, ...]:
    return TRANSITIONS[transition][0]


def _to(transition: str) -> str:
    return TRANSITIONS[transition][1]


def _key(message_id: uuid.UUID | str, handler: str) -> dict[str, object]:
    return {"message_id": message_id, "handler": handler}


def delivery_start(*, message_id: uuid.UUID, handler: str, message_type: str, payload: dict, queue: str) -> int | None:
    """pending|running -> running, counting the start; the starts since the delivery's last clean
    finish, or None when it is not startable (done, dead, unplanned: a stale copy).

    A delivery with no row yet (its sender commits as we start) is created running.
    """

    def start() -> int | None:
        # One statement, committed without waiting for the disk (a count lost in a crash only
        # gives a poison message one more try), on a connection not pinged first (one counted
        # twice when the connection dies mid-statement only gives it one try fewer): this runs
        # for every delivery, as its first query.
        field = Delivery._meta.get_field("message_id")
        allowed = _from("start")
        rows = execute_with_async_commit(
            f"UPDATE {Delivery._meta.db_table} "  # noqa: S608 (table name from the model, values bound)
            "SET status = %s, unfinished_starts = unfinished_starts + 1, attempts = attempts + 1 "
            f"WHERE message_id = %s AND handler = %s AND status IN ({', '.join(['%s'] * len(allowed))}) "
            "RETURNING unfinished_starts",
            [_to("start"), field.get_db_prep_value(message_id, connection), handler, *allowed],
            skip_health_check=True,
        )
        return rows[0][0] if rows else None

    starts = start()
    if starts is not None:
        return starts
    _, created = Delivery.objects.get_or_create(
        **_key(message_id, handler),
        defaults={
            "message_type": message_type,
            "payload": payload,
            "queue": queue,
            "status": _to("start"),
            "unfinished_starts": 1,
            "attempts": 1,
            "sent_at": timezone.now(),
        },
    )
    # Not created: the row appeared meanwhile; it may be pending rather than done, so try the
    # start again instead of calling it a duplicate.
    return 1 if created else start()


def delivery_finish(*, message_id: uuid.UUID, handler: str, with_statements: Sequence[Statement] = ()) -> bool:
    """pending|running -> done. Called inside the handler's transaction, before the handler: the
    UPDATE takes the row lock, so a concurrent copy waits and then finds it done, and a failing
    handler's rollback undoes the mark.

    ``with_statements`` run in the same round trip, after the mark (the task's result): when the
    mark loses, the caller rolls the transaction back, and them with it.
    """
    mark = update_sql(
        Delivery.objects.filter(**_key(message_id, handler), status__in=_from("finish")),
        {"status": _to("finish"), "completed_at": timezone.now(), "unfinished_starts": 0},
    )
    return bool(execute_together([mark, *with_statements])[0])


def delivery_release(*, message_id: uuid.UUID, handler: str, retry_at: datetime) -> bool:
    """running -> pending after a clean failure: a finish, so its start no longer counts; the
    sweeper leaves it alone until ``retry_at``, while the retry waits."""
    unfinished = Delivery.objects.filter(**_key(message_id, handler), status__in=_from("release"))
    with transaction.atomic():
        if connection.features.has_select_for_update_skip_locked:
            # A row another copy holds (its handler's transaction, perhaps on a lost host) is that
            # copy's to finish or release: waiting for it again could outlast the soft time limit.
            unfinished = Delivery.objects.filter(pk__in=unfinished.select_for_update(skip_locked=True).values("pk"))
        return bool(unfinished.update(status=_to("release"), unfinished_starts=0, sent_at=retry_at))


def delivery_give_back(*, message_id: uuid.UUID | str, handler: str) -> bool:
    """running -> pending with its start uncounted: the platform stopped it (a deploy's shutdown,
    a lost broker connection), the message did not kill its worker.

    Runs in a worker's main process right after it terminated the pool process that ran the
    delivery; that process's transaction may hold the row for a moment longer while it dies, so
    the wait for the lock is bounded instead of stalling the worker.
    """
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '5s'")
        return bool(
            Delivery.objects.filter(
                **_key(message_id, handler), status__in=_from("give_back"), unfinished_starts__gt=0
            ).update(status=_to("give_back"), unfinished_starts=F("unfinished_starts") - 1)
        )


def delivery_postpone(*, message_id: uuid.UUID | str, handler: str, until: datetime) -> bool:
    """pending|running -> pending, sent again no earlier than ``until``: a worker that does not
    know its type or handler yet (a rolling deploy) retries it later itself."""
    return bool(
        Delivery.objects.filter(**_key(message_id, handler), status__in=_from("postpone")).update(
            status=_to("postpone"), sent_at=until
        )
    )


def delivery_kill(*, message_id: uuid.UUID | str, handler: str) -> bool:
    """pending|running|unplanned -> dead: it failed for good. A done delivery stays done: a stale
    copy that failed (before it could see the done mark) says nothing about the delivery."""
    return bool(
        Delivery.objects.filter(**_key(message_id, handler), status__in=_from("kill")).update(status=_to("kill"))
    )


def delivery_plan(*, message_id: uuid.UUID | str, handler: str, sent_at: datetime) -> bool:
    """unplanned -> pending, sent at ``sent_at``: its predicate answered at last (the relay)."""
    return bool(
        Delivery.objects.filter(**_key(message_id, handler), status__in=_from("plan")).update(
            status=_to("plan"), sent_at=sent_at, last_error=""
        )
    )


def delivery_requeue(*, message_id: uuid.UUID | str, handler: str) -> bool:
    """dead -> pending with a fresh start count, to be sent again now; False if it is not dead."""
    return bool(
        Delivery.objects.filter(**_key(message_id, handler), status__in=_from("requeue")).update(
            status=_to("requeue"), unfinished_starts=0, sent_at=timezone.now(), send_count=F("send_count") + 1
        )
    )


def deliveries_release_due(*, pks: list[int]) -> int:
    """delayed -> pending, sent now: the relay releases these due rows before it publishes them."""
    return Delivery.objects.filter(pk__in=pks, status__in=_from("release_due")).update(
        status=_to("release_due"), sent_at=timezone.now(), send_count=F("send_count") + 1
    )


def deliveries_hold(*, pks: list[int]) -> int:
    """pending -> delayed again, unsent: released rows the broker did not take (still not started)."""
    return Delivery.objects.filter(pk__in=pks, status__in=_from("hold"), attempts=0).update(
        status=_to("hold"), sent_at=None, send_count=F("send_count") - 1
    )


def delivery_claim(*, pk: int, concurrency_key: str) -> bool:
    """pending|running -> running, its start not counted yet: it holds a slot of its handler's
    concurrency limit under ``concurrency_key`` (its start is counted by ``delivery_start``)."""
    return bool(
        Delivery.objects.filter(pk=pk, status__in=_from("claim")).update(
            status=_to("claim"), concurrency_key=concurrency_key
        )
    )


def delivery_wait(
    *, pk: int, run_after: datetime | None, rate_key: str | None = None, concurrency_key: str | None = None
) -> bool:
    """pending|running -> waiting: over a flow limit. ``run_after`` is when its rate allows it
    again; None: when a slot of its concurrency key frees. The relay releases it."""
    keys = {
        name: value
        for name, value in (("rate_key", rate_key), ("concurrency_key", concurrency_key))
        if value is not None
    }
    return bool(
        Delivery.objects.filter(pk=pk, status__in=_from("wait")).update(status=_to("wait"), run_after=run_after, **keys)
    )


def deliveries_release_waiting(*, pks: list[int]) -> int:
    """waiting -> pending, sent now: the relay releases these rows before it publishes them."""
    return Delivery.objects.filter(pk__in=pks, status__in=_from("release_waiting")).update(
        status=_to("release_waiting"), run_after=None, sent_at=timezone.now(), send_count=F("send_count") + 1
    )


def deliveries_wait_again(*, pks: list[int]) -> int:
    """pending -> waiting again, unsent: released rows the broker did not take."""
    return Delivery.objects.filter(pk__in=pks, status__in=_from("wait_again")).update(
        status=_to("wait_again"), sent_at=None, send_count=F("send_count") - 1
    )


def deliveries_due_now(*, deliveries: QuerySet[Delivery]) -> int:
    """The delayed ones among ``deliveries`` are due now (the relay's next pass sends them); how many."""
    return deliveries.filter(status=Status.DELAYED).update(run_after=timezone.now())


def deliveries_cancel(*, deliveries: QuerySet[Delivery]) -> int:
    """delayed|waiting|pending -> cancelled for each of ``deliveries``, and a cancel request for each one
    running; how many were cancelled or asked to stop.

    Persistent: a delayed one is never released, and a queued copy (the broker's message, or a
    copy a restart brings back) finds it not startable and does nothing. A running one is asked:
    its handler sees ``cancel_requested()`` and may stop by raising ``JobCancelled``. A finished
    one is left as it is.
    """
    cancelled = deliveries.filter(status__in=_from("cancel")).update(status=_to("cancel"), completed_at=timezone.now())
    running = deliveries.filter(status__in=_from("stop")).values_list("message_id", "handler")
    requests = [DeliveryCancelRequest(message_id=m, handler=h) for m, h in running]
    DeliveryCancelRequest.objects.bulk_create(requests, ignore_conflicts=True)
    return cancelled + len(requests)


def delivery_cancel_requested(*, message_id: uuid.UUID | str, handler: str) -> bool:
    """Whether a cancel was asked for this delivery while it ran."""
    return DeliveryCancelRequest.objects.filter(**_key(message_id, handler)).exists()


def delivery_stop(*, message_id: uuid.UUID | str, handler: str) -> bool:
    """running -> cancelled: its handler stopped on a cancel request."""
    return bool(
        Delivery.objects.filter(**_key(message_id, handler), status__in=_from("stop")).update(
            status=_to("stop"), completed_at=timezone.now(), unfinished_starts=0
        )
    )


def delivery_stop_forced(*, message_id: uuid.UUID | str, handler: str) -> bool:
    """running -> cancelled after its process was killed (the hard stop). The row stays locked by
    the handler's transaction until the process is gone: the wait for it is bounded (PostgreSQL;
    OperationalError when it runs out) so the relay goes on and tries again."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '2s'")
        return delivery_stop(message_id=message_id, handler=handler)


def delivery_created_at(*, message_id: uuid.UUID | str, handler: str) -> datetime | None:
    """When the delivery was recorded (its first send), or None if no process ever planned it."""
    return Delivery.objects.filter(**_key(message_id, handler)).values_list("created_at", flat=True).first()


def retry_time(seconds: float) -> datetime:
    """``seconds`` from now: when a postponed or released delivery is due again."""
    return timezone.now() + timedelta(seconds=seconds)
