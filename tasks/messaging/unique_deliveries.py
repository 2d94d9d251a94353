"""Unique jobs and debounce: one delivery per handler and key at a time, enforced by the database
(the partial unique index ``delivery_unique_key``), so it holds across processes and hosts.

Declared on the subscription (``subscribe_async(..., unique=lambda e: f"reindex:{e.component_id}",
unique_for=timedelta(minutes=5), debounce=False)``):

- **drop** (the default): the first request's delivery holds the key for ``unique_for``, whatever
  it does meanwhile (waits, runs, finishes); requests in that window are dropped, so the job runs
  once. The first request after the window takes the key over (the old delivery keeps running
  if it still is) and makes a new delivery.
- **debounce**: each request's delivery is delayed by ``unique_for``; a request arriving while
  one is delayed replaces it (its message, so the latest payload, and a new due time): it runs
  once, ``unique_for`` after the last request. Once released, a new request delays another.

Operators change a handler's ``unique_for`` in the admin (``FlowLimit.unique_for``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from django.utils import timezone

from tasks.messages import Message
from tasks.messaging.flow_limit_overrides import unique_window
from tasks.messaging.round_trips import insert_unless_conflicting
from tasks.messaging.subscriptions import Subscription
from tasks.models import DEBOUNCE_KEY_PREFIX, Delivery

KEY_MAX = Delivery._meta.get_field("unique_key").max_length


def unique_key_and_due(
    message: Message, subscription: Subscription, *, run_after: datetime | None, now: datetime
) -> tuple[str, datetime | None]:
    """The delivery's unique key ("" when the subscription declares none) and due time."""
    if subscription.unique is None:
        return "", run_after
    key = str(subscription.unique(message))
    if not key:
        raise ValueError(f"the unique key of {subscription.handler_path} for {message.message_name} is empty")
    if subscription.debounce:
        key = DEBOUNCE_KEY_PREFIX + key
        debounced = now + unique_window(subscription)
        run_after = max(run_after, debounced) if run_after else debounced
    if len(key) > KEY_MAX:
        raise ValueError(f"the unique key {key[:40]}... is longer than {KEY_MAX} characters")
    return key, run_after


def deliveries_insert_unique(rows: Iterable[Delivery]) -> list[Delivery]:
    """Insert deliveries that carry a unique key; return the ones inserted (to publish if
    pending). A dropped one (its key held) is not inserted; a debounced one replaces the delayed
    delivery holding its key. One statement per row when its key is free."""
    inserted = []
    for row in rows:
        if insert_unless_conflicting(row):
            inserted.append(row)
        elif row.unique_key.startswith(DEBOUNCE_KEY_PREFIX):
            # The key's delayed delivery takes this request's message; if it was released just
            # now (no longer delayed), this request delays a new one.
            if not _replace_delayed(row) and insert_unless_conflicting(row):
                inserted.append(row)
        elif _release_expired(row) and insert_unless_conflicting(row):
            inserted.append(row)  # the key's holder was past its window
    return inserted


def _replace_delayed(row: Delivery) -> bool:
    """The delayed delivery holding ``row``'s key takes ``row``'s message and due time."""
    holder = Delivery.objects.filter(handler=row.handler, unique_key=row.unique_key, status=Delivery.Status.DELAYED)
    # Its status stays delayed: only what it runs with, and when, changes.
    return bool(
        holder.update(
            message_id=row.message_id,
            message_type=row.message_type,
            payload=row.payload,
            run_after=row.run_after,
            trace_context=row.trace_context,
        )
    )


def _release_expired(row: Delivery) -> bool:
    """A delivery that has held ``row``'s key past its ``unique_until`` gives it up; whether one did."""
    holder = Delivery.objects.filter(handler=row.handler, unique_key=row.unique_key, unique_until__lt=timezone.now())
    return bool(holder.update(unique_key=""))
