"""Rate- and concurrency-limited handlers for the tests of ``tasks.reliability.flow_limits``; each
run is recorded in the ledger with its start and finish, so a test checks the limits across
processes. Tests subscribe them with ``subscribed()``; workers and the relay get them from the
app ``tests.support.flow_limited`` (``FLOW_LIMITED_APPS`` in their environment)."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

from tasks.bus import Broker
from tasks.messages import Message
from tasks.queues import HIGH_PRIORITY
from tests.support.ledger.models import Effect
from tests.support.subscribed import subscribed_by

RATE = 10
CONCURRENCY = 2
SCAN_SECONDS = 0.4


@dataclass(frozen=True)
class PartnerNotified(Message):
    n: int


@dataclass(frozen=True)
class ScanRequested(Message):
    author_id: int
    n: int


@dataclass(frozen=True)
class AuthorRated(Message):
    author_id: int
    n: int


@dataclass(frozen=True)
class Pinged(Message):
    n: int


def notify_partner(event: PartnerNotified) -> None:
    Effect.objects.create(key=f"partner:{event.n}")


def scan(event: ScanRequested) -> None:
    started = time.time()
    time.sleep(SCAN_SECONDS)
    Effect.objects.create(key=f"scan:{event.author_id}:{event.n}:{started:.3f}:{time.time():.3f}")


def recount(event: AuthorRated) -> None:
    Effect.objects.create(key=f"recount:{event.author_id}:{event.n}")


def ping(event: Pinged) -> None:
    Effect.objects.create(key=f"ping:{event.n}")


FLOW_LIMITED_APPS = "tests.support.ledger,tests.support.flow_limited"
NOTIFY_HANDLER = f"{__name__}.notify_partner"
SCAN_HANDLER = f"{__name__}.scan"
RECOUNT_HANDLER = f"{__name__}.recount"
PING_HANDLER = f"{__name__}.ping"


def subscribe(broker: Broker) -> None:
    """A global rate limit on ``notify_partner``, a per-author concurrency limit on ``scan``, a
    per-author rate limit on ``recount`` and ``ping`` unlimited on another queue."""
    broker.subscribe_async(PartnerNotified, notify_partner, rate_limit=f"{RATE}/second")
    broker.subscribe_async(
        ScanRequested, scan, concurrency=CONCURRENCY, concurrency_key=lambda e: f"author:{e.author_id}"
    )
    broker.subscribe_async(AuthorRated, recount, rate_limit="2/minute", rate_key=lambda e: f"author:{e.author_id}")
    broker.subscribe_async(Pinged, ping, queue_name=HIGH_PRIORITY)


def subscribed() -> contextlib.AbstractContextManager:
    """The handlers subscribed on the default broker inside the block, as a test needs them."""
    return subscribed_by(subscribe)


def scan_intervals(author_id: int) -> list[tuple[float, float]]:
    """(start, finish) of each recorded scan of ``author_id``."""
    keys = Effect.objects.filter(key__startswith=f"scan:{author_id}:").values_list("key", flat=True)
    return [(float(k.split(":")[3]), float(k.split(":")[4])) for k in keys]
