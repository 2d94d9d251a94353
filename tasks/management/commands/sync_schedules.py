"""``manage.py sync_schedules``: write the code-declared default schedules (run at release)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django_celery_beat.models import PeriodicTask

from tasks.scheduling.declared import declared_schedules, schedules_sync


class Command(BaseCommand):
    help = (
        "Create the declared default schedules that do not exist yet. Existing schedules keep "
        "their admin edits; --reset NAME restores a declared default; --list shows them all."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--reset", action="append", default=[], metavar="NAME", help="restore this default")
        parser.add_argument("--list", action="store_true", dest="list_only", help="list, change nothing")

    def handle(self, *args: Any, reset: list[str], list_only: bool, **options: Any) -> None:
        if list_only:
            self._list()
            return
        try:
            report = schedules_sync(reset=reset)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        for name in report.created:
            self.stdout.write(f"created  {name}")
        for name in report.reset:
            self.stdout.write(f"reset    {name}")
        for name, fields in report.kept_edits.items():
            self.stdout.write(f"kept     {name} (edited in the admin: {', '.join(fields)}; --reset {name} to undo)")
        for name in report.kept_deleted:
            self.stdout.write(f"deleted  {name} (deleted by an operator; --reset {name} to create it again)")
        unchanged = len(report.unchanged) - len(report.kept_edits)
        self.stdout.write(
            self.style.SUCCESS(
                f"{len(report.created)} created, {len(report.reset)} reset, "
                f"{len(report.kept_edits)} kept with edits, {len(report.kept_deleted)} kept deleted, "
                f"{unchanged} unchanged."
            )
        )

    def _list(self) -> None:
        existing = {task.name: task for task in PeriodicTask.objects.filter(name__in=declared_schedules())}
        for name, spec in declared_schedules().items():
            row = existing.get(name)
            state = "missing" if row is None else ("enabled" if row.enabled else "disabled")
            self.stdout.write(
                f"{name}\t{spec.task}\t{spec.schedule}\tqueue={spec.queue or '-'}\t"
                f"misfire={spec.misfire}\toverlap={spec.overlap}\t{state}"
            )
