"""Messages and async handlers of the "new release" in rolling-deploy tests."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from tasks.messages import Message
from tests.support.ledger.models import Effect

# Where the handler lived in the old release; deliveries recorded under it still run.
OLD_HANDLER = "tests.support.deploys.old_handlers.record_reshaped"


@dataclass(frozen=True)
class ReshapedEvent(Message):
    """Version 1 had ``name``; version 2 calls it ``key`` and adds ``note`` with a default."""

    schema_version: ClassVar[int] = 2
    key: str
    note: str = ""

    @classmethod
    def upgrade(cls, data: dict[str, Any], from_version: int) -> dict[str, Any]:
        """Version 1 -> 2: ``name`` became ``key``."""
        if from_version == 1:
            data["key"] = data.pop("name")
        return data


@dataclass(frozen=True)
class ExitingEvent(Message):
    """Its handler ends its worker process (``os._exit``) until ``flag_path`` exists."""

    key: str
    flag_path: str = ""


def record_reshaped(event: ReshapedEvent) -> None:
    """Apply the effect once, in the delivery's transaction."""
    Effect.objects.create(key=event.key, worker_pid=os.getpid())


def exit_until_flag(event: ExitingEvent) -> None:
    """A poison message: the pool process exits at once, as a crash in native code would."""
    if not Path(event.flag_path).exists():
        os._exit(1)
    Effect.objects.create(key=event.key, worker_pid=os.getpid())


def register() -> None:
    """The new release's subscriptions."""
    from tasks.bus import get_message_broker  # noqa: PLC0415 (imported when registering, after app loading)

    broker = get_message_broker()
    broker.subscribe_async(ReshapedEvent, record_reshaped, replaces=[OLD_HANDLER])
    broker.subscribe_async(ExitingEvent, exit_until_flag)
