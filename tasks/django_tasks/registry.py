"""The registry of decorated tasks: how a worker turns the task path of a message into a function.

``@task`` builds its ``Task`` with the backend's ``task_class``; ``RegisteredTask`` is that class
here, and records itself under its ``module_path`` when the decorator runs (the module is imported
by Celery's autodiscovery of ``<app>.tasks``, or by the code that enqueues). A path that came from
the broker is only ever looked up here, never imported: a message can run a decorated task of the
running code and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.utils.version import PY311

from tasks.django_tasks.compat import Task

_registry: dict[str, Task] = {}


@dataclass(frozen=True, slots=PY311, kw_only=True)
class RegisteredTask(Task):
    """A ``Task`` that registers itself: the ``task_class`` of ``PlatformTaskBackend``."""

    def __post_init__(self) -> None:
        # Named, not super(): a slotted dataclass is a new class, which zero-argument super() misses.
        Task.__post_init__(self)
        task_register(self)


def task_register(task: Task) -> None:
    """Register ``task`` under its module path.

    ``task.using(...)`` builds a variant of a registered task (same function): the decorated task
    stays registered. Another function under the same path (its module imported again) replaces it.
    """
    existing = _registry.get(task.module_path)
    if existing is None or existing.func is not task.func:
        _registry[task.module_path] = task


def registered_task(module_path: str) -> Task | None:
    """The decorated task whose function is ``module_path``, or None."""
    return _registry.get(module_path)
