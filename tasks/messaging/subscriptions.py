"""Subscriptions: which handler runs for which message type, in process or on a worker.

``SubscriptionRegistry`` is what every broker keeps; ``tasks.bus`` builds the brokers on it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import limits
from django.utils.module_loading import import_string
from limits import RateLimitItem

from tasks.messages import Message
from tasks.queues import DEFAULT, validate_queue

logger = logging.getLogger(__name__)

Handler = Callable[[Any], Any]
Predicate = Callable[[Any], bool]


class SubscriptionError(ValueError):
    """A subscription that cannot work: a handler that cannot be imported by path, a bad queue."""


def handler_path(handler: Handler) -> str:
    """``module.function`` of a module-level function; SubscriptionError for anything else."""
    module = getattr(handler, "__module__", None)
    qualname = getattr(handler, "__qualname__", None)
    if not module or not qualname or "<" in qualname or "." in qualname or module == "__main__":
        raise SubscriptionError(
            f"async handler {handler!r} must be a module-level function, importable by path "
            "(no lambda, closure, method or partial): a worker process imports it by name"
        )
    path = f"{module}.{qualname}"
    try:
        importable = import_string(path) is handler
    except ImportError:
        importable = False
    if not importable:
        raise SubscriptionError(f"async handler {path} cannot be imported by that path, as a worker would")
    return path


def rate_limit_parse(text: str) -> RateLimitItem:
    """The ``limits`` item for a rate such as "10/second" or "60 per minute"; ValueError if unreadable."""
    try:
        item = limits.parse(text)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a rate: write it as '10/second', '60/minute' or '1000 per hour'") from exc
    if item.amount < 1:
        raise ValueError(f"{text!r}: a rate allows at least one job per period")
    return item


def flow_limits_validate(
    *,
    rate_limit: str | None,
    rate_key: Callable[[Any], str] | None,
    concurrency: int | None,
    concurrency_key: Callable[[Any], str] | None,
) -> None:
    """SubscriptionError for flow limits that cannot work: an unreadable rate, a key without its limit."""
    if rate_limit is not None:
        try:
            rate_limit_parse(rate_limit)
        except ValueError as exc:
            raise SubscriptionError(f"rate_limit={exc}") from None
    if concurrency is not None and (
        isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
    ):
        raise SubscriptionError(f"concurrency={concurrency!r}: at least 1 running job per key")
    if rate_key is not None and rate_limit is None:
        raise SubscriptionError("rate_key= needs rate_limit=, the rate each key gets")
    if concurrency_key is not None and concurrency is None:
        raise SubscriptionError("concurrency_key= needs concurrency=, how many run at once per key")


def _describe(handler: Handler) -> str:
    module = getattr(handler, "__module__", "?")
    return f"{module}.{getattr(handler, '__qualname__', repr(handler))}"


@dataclass(frozen=True)
class Subscription:
    """One handler of one message type: sync (in process) or async (a Celery task on a queue)."""

    message_type: type[Message]
    handler: Handler
    is_async: bool
    queue_name: str | None = None
    predicate: Predicate | None = None
    # Handler paths this one was known by before a rename: deliveries recorded under them run it.
    replaces: tuple[str, ...] = ()
    # Unique jobs: the key of a message's delivery (one waits at a time per key), how long a
    # waiting one blocks the key, and whether requests debounce (tasks/messaging/unique_deliveries.py).
    unique: Callable[[Any], str] | None = None
    unique_for: timedelta | None = None
    debounce: bool = False
    # Flow limits, the code's defaults (tasks/reliability/flow_limits.py; the admin overrides them):
    # a rate ("10/second") per key, and at most ``concurrency`` running per key, across all workers.
    rate_limit: str | None = None
    rate_key: Callable[[Any], str] | None = None
    concurrency: int | None = None
    concurrency_key: Callable[[Any], str] | None = None

    @property
    def handler_path(self) -> str:
        return _describe(self.handler)

    def wants(self, message: Message) -> bool:
        return self.predicate is None or bool(self.predicate(message))


class SubscriptionRegistry:
    """Subscriptions by message type; the base of every broker."""

    def __init__(self, subscriptions: list[Subscription] | None = None) -> None:
        self._subscriptions: list[Subscription] = list(subscriptions or [])

    def subscribe(self, message_type: type[Message], handler: Handler, predicate: Predicate | None = None) -> None:
        """Run ``handler(message)`` in process when a ``message_type`` is published."""
        self._add(Subscription(message_type, handler, is_async=False, predicate=predicate))

    def subscribe_async(
        self,
        message_type: type[Message],
        handler: Handler,
        queue_name: str = DEFAULT,
        predicate: Predicate | None = None,
        replaces: Iterable[str] = (),
        *,
        unique: Callable[[Any], str] | None = None,
        unique_for: timedelta | None = None,
        debounce: bool = False,
        rate_limit: str | None = None,
        rate_key: Callable[[Any], str] | None = None,
        concurrency: int | None = None,
        concurrency_key: Callable[[Any], str] | None = None,
    ) -> None:
        """Run ``handler(message)`` on a worker, one Celery task per message, on ``queue_name``.

        The predicate runs at publish time: when it is false no task is sent at all.
        ``replaces`` names the paths the handler had before it was renamed or moved, so the
        deliveries (and dead letters) recorded under an old path still run, with this handler.

        ``unique(message)`` gives a key and ``unique_for`` a window: a delivery holds its key for
        the window, and requests meanwhile are dropped (the job runs once). With ``debounce`` each
        request waits ``unique_for``; one arriving meanwhile replaces it (the latest message) and
        starts the wait again: it runs once, after the last request.

        ``rate_limit`` ("10/second", "60/minute") caps how often it starts, across all workers,
        per ``rate_key(message)`` (one limit for the handler without it); ``concurrency`` caps how
        many run at once, per ``concurrency_key(message)``. A job over a limit waits in the
        database, holding no worker, and the relay releases it when allowed.
        """
        handler_path(handler)
        flow_limits_validate(
            rate_limit=rate_limit, rate_key=rate_key, concurrency=concurrency, concurrency_key=concurrency_key
        )
        if (unique_for is not None or debounce) and unique is None:
            raise SubscriptionError("unique_for and debounce need unique=, the function giving a message's key")
        if unique is not None and not unique_for:
            raise SubscriptionError("unique= needs unique_for=, how long a delivery holds its key")
        try:
            validate_queue(queue_name)
        except ValueError as exc:
            raise SubscriptionError(str(exc)) from None
        old_paths = (replaces,) if isinstance(replaces, str) else tuple(replaces)
        for path in old_paths:
            if not isinstance(path, str) or "." not in path or path.startswith(".") or path.endswith("."):
                raise SubscriptionError(f"replaces={path!r}: a handler path is 'module.function'")
        self._add(
            Subscription(
                message_type,
                handler,
                is_async=True,
                queue_name=queue_name,
                predicate=predicate,
                replaces=old_paths,
                unique=unique,
                unique_for=unique_for,
                debounce=debounce,
                rate_limit=rate_limit,
                rate_key=rate_key,
                concurrency=concurrency,
                concurrency_key=concurrency_key,
            )
        )

    def _add(self, subscription: Subscription) -> None:
        if not (isinstance(subscription.message_type, type) and issubclass(subscription.message_type, Message)):
            raise SubscriptionError(f"{subscription.message_type!r} is not a Message subclass")
        for existing in self._subscriptions:
            if (existing.message_type, existing.handler, existing.is_async) == (
                subscription.message_type,
                subscription.handler,
                subscription.is_async,
            ):
                return  # subscribing the same handler twice is a no-op
        self._subscriptions.append(subscription)

    def subscriptions(self) -> list[Subscription]:
        """Every subscription, in the order they were made."""
        return list(self._subscriptions)

    def async_subscription(self, message_type: type[Message], path: str) -> Subscription | None:
        """See ``async_subscription_find``: this registry's async subscription for a delivery."""
        return async_subscription_find(self._subscriptions, message_type, path)

    def subscriptions_for(self, message: Message) -> list[Subscription]:
        """Subscriptions whose type the message is an instance of (subscribing to a base type
        receives its subclasses), one per handler and mode: a handler subscribed to a type and
        to its base still runs once per message."""
        seen: set[tuple[Handler, bool]] = set()
        wanted = []
        for s in self._subscriptions:
            if isinstance(message, s.message_type) and (s.handler, s.is_async) not in seen:
                seen.add((s.handler, s.is_async))
                wanted.append(s)
        return wanted

    def run_sync(self, message: Message) -> None:
        """Run the sync handlers that want ``message``; each error is logged, none raised."""
        for subscription in self.subscriptions_for(message):
            if not subscription.is_async:
                # One handler failing never stops the others.
                _logging_errors(subscription, message, "sync handler failed", _run_if_wanted)

    def async_wanted(self, message: Message) -> AsyncPlan:
        """The async subscriptions whose predicate wants ``message``. A predicate that raises is
        logged and its subscription listed in ``.failed`` with the error, so the outbox records
        that handler's delivery as unplanned and the relay plans it again: never dropped."""
        plan = AsyncPlan()
        for subscription in self.subscriptions_for(message):
            if not subscription.is_async:
                continue
            try:
                wanted = _wants(subscription, message)
            except Exception as exc:
                _log_error(subscription, message, "predicate failed; the relay plans this delivery again")
                plan.failed.append((subscription, exc))
                continue
            if wanted:
                plan.append(subscription)
        return plan


def async_subscription_find(
    subscriptions: Iterable[Subscription], message_type: type[Message], path: str
) -> Subscription | None:
    """The async subscription of ``message_type`` (or a base of it) whose handler is ``path``, by
    its own path or one it ``replaces``; None if there is none.

    This is how a worker turns the handler path of a delivery (broker data, untrusted) into a
    function: only what the running code subscribed can be found, nothing is imported by name.
    """
    candidates = [s for s in subscriptions if s.is_async and issubclass(message_type, s.message_type)]
    # A handler's own path wins over another's old name for it.
    exact = [s for s in candidates if s.handler_path == path]
    renamed = [s for s in candidates if path in s.replaces]
    return (exact or renamed or [None])[0]


def _run_if_wanted(subscription: Subscription, message: Message) -> None:
    if subscription.wants(message):
        subscription.handler(message)


def _wants(subscription: Subscription, message: Message) -> bool:
    return subscription.wants(message)


class AsyncPlan(list):
    """The async subscriptions that want a message (a list, as before), and in ``failed`` the
    ``(subscription, error)`` of those whose predicate raised."""

    def __init__(self, wanted: Iterable[Subscription] = ()) -> None:
        super().__init__(wanted)
        self.failed: list[tuple[Subscription, Exception]] = []


def _logging_errors(
    subscription: Subscription, message: Message, what: str, call: Callable[[Subscription, Message], Any]
) -> Any:
    """``call(subscription, message)``; an error is logged with message_id and handler, not raised."""
    try:
        return call(subscription, message)
    except Exception:
        _log_error(subscription, message, what)
        return None


def _log_error(subscription: Subscription, message: Message, what: str) -> None:
    logger.exception(what, extra={"message_id": str(message.message_id), "handler": subscription.handler_path})
