"""``manage.py dead_letters list|requeue|discard``: the admin's dead-letter actions in a terminal."""

from django.core.management.base import BaseCommand, CommandError

from tasks.messaging.deliveries import DispatchError
from tasks.models import DeadLetter
from tasks.reliability.dead_letters import Requeued, dead_letters_discard, dead_letters_requeue_report


class Command(BaseCommand):
    help = "List, requeue or discard dead letters. Select by --id, --task, --handler, --reason, or --all."

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["list", "requeue", "discard"])
        parser.add_argument("--id", type=int, action="append", dest="ids", help="a dead letter id (repeatable)")
        parser.add_argument("--task", help="task name")
        parser.add_argument("--handler", help="handler path")
        parser.add_argument("--reason", help="failed, retries exhausted, poison, time limit")
        parser.add_argument("--status", default="dead", help="dead (default), requeued, discarded, resolved or any")
        parser.add_argument("--all", action="store_true", help="act on every match (required without --id)")

    def handle(self, *args, action, ids, task, handler, reason, status, all, **options):
        queryset = DeadLetter.objects.all()
        if status != "any":
            queryset = queryset.filter(status=status)
        if ids:
            queryset = queryset.filter(pk__in=ids)
        if task:
            queryset = queryset.filter(task_name=task)
        if handler:
            queryset = queryset.filter(handler=handler)
        if reason:
            queryset = queryset.filter(reason=reason)
        if action == "list":
            for dl in queryset.order_by("-last_failed_at"):
                self.stdout.write(
                    f"{dl.pk:>6}  {dl.status:<9} {dl.last_failed_at:%Y-%m-%d %H:%M:%S}  {dl.task_name}  "
                    f"{dl.handler or '-'}  {dl.reason}: {dl.exception_type.rsplit('.', 1)[-1]}: "
                    f"{dl.exception_message[:80]}"
                )
            self.stdout.write(f"{queryset.count()} dead letter(s)")
            return
        if not ids and not all:
            raise CommandError(f"'{action}' needs --id N (repeatable) or --all to act on every match")
        if action == "discard":
            self.stdout.write(f"discarded {dead_letters_discard(dead_letters=queryset)}")
            return
        # Each row is locked and re-checked as its turn comes: two of these at once send each once.
        try:
            counts = dead_letters_requeue_report(dead_letters=queryset)
        except DispatchError as exc:
            raise CommandError(f"broker unavailable: {exc}") from exc
        self.stdout.write(
            f"requeued {counts[Requeued.SENT]}, resolved {counts[Requeued.RESOLVED]} (delivery done already), "
            f"skipped {counts[Requeued.SKIPPED]} (requeued or discarded meanwhile)"
        )
