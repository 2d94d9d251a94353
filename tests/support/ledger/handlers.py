"""Events and async handlers for fault tests. Workers import these by path."""

import os
import time
from dataclasses import dataclass
from pathlib import Path

from django.db.models import Count

from tasks.messages import Message
from tasks.reliability.platform_task import TransientError
from tests.support.ledger.models import Effect


@dataclass(frozen=True)
class LedgerEvent(Message):
    """A test event; ``work_seconds`` makes its handler slow, ``mode`` makes it misbehave."""

    key: str
    work_seconds: float = 0.0
    mode: str = ""
    flag_path: str = ""


def record_effect(event: LedgerEvent) -> None:
    """Apply one side effect in the delivery's transaction (so it is applied once)."""
    if event.work_seconds:
        time.sleep(event.work_seconds)
    Effect.objects.create(key=event.key, worker_pid=os.getpid())


def fail_until_flag(event: LedgerEvent) -> None:
    """Fail transiently until ``flag_path`` exists, then apply the effect."""
    if not Path(event.flag_path).exists():
        raise TransientError("the flag is not there yet")
    record_effect(event)


def fail_permanently(event: LedgerEvent) -> None:
    raise ValueError(f"cannot handle {event.key}: bad data")


def kill_own_worker_until_flag(event: LedgerEvent) -> None:
    """A poison message: it kills its worker process (like an OOM kill) until ``flag_path`` exists."""
    if not Path(event.flag_path).exists():
        os.kill(os.getpid(), 9)
    record_effect(event)


def effects_summary() -> tuple[int, int]:
    """(distinct keys applied, keys applied more than once)."""
    distinct = Effect.objects.values("key").distinct().count()
    twice = Effect.objects.values("key").annotate(n=Count("pk")).filter(n__gt=1).count()
    return distinct, twice


def _mode_is(mode: str):
    def predicate(event: LedgerEvent) -> bool:
        return event.mode == mode

    return predicate


def register() -> None:
    """One handler per ``mode``: the event's mode picks how its handler behaves."""
    from tasks.bus import get_message_broker  # noqa: PLC0415 (imported when registering, after app loading)

    broker = get_message_broker()
    broker.subscribe_async(LedgerEvent, record_effect, predicate=_mode_is(""))
    broker.subscribe_async(LedgerEvent, fail_until_flag, predicate=_mode_is("transient"))
    broker.subscribe_async(LedgerEvent, fail_permanently, predicate=_mode_is("permanent"))
    broker.subscribe_async(LedgerEvent, kill_own_worker_until_flag, predicate=_mode_is("poison"))
    broker.subscribe_async(LedgerEvent, slow_until_flag, predicate=_mode_is("slow"))


def slow_until_flag(event: LedgerEvent) -> None:
    """Takes ``work_seconds`` until ``flag_path`` exists, then is quick."""
    if not Path(event.flag_path).exists():
        time.sleep(event.work_seconds)
    Effect.objects.create(key=event.key, worker_pid=os.getpid())
