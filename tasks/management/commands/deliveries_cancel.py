"""``manage.py deliveries_cancel``: the admin's cancel action in a terminal."""

import uuid

from django.core.management.base import BaseCommand, CommandError

from tasks.models import Delivery
from tasks.reliability.delivery_state import deliveries_cancel


class Command(BaseCommand):
    help = (
        "Cancel deliveries for good: a delayed one is never released, a queued copy does nothing when a worker "
        "takes it, a running one is asked to stop (its handler sees cancel_requested()). Select by --message-id "
        "(a Django task's result id), --batch, --handler, --status, or --all."
    )

    def add_arguments(self, parser):
        parser.add_argument("--message-id", action="append", dest="message_ids", help="a message id (repeatable)")
        parser.add_argument("--handler", help="handler path")
        parser.add_argument("--batch", type=int, help="every member of this batch")
        parser.add_argument(
            "--status", choices=["delayed", "waiting", "pending", "running"], help="only those in this state"
        )
        parser.add_argument("--all", action="store_true", help="every match (required without --message-id)")

    def handle(self, *args, message_ids, handler, batch, status, all, **options):
        if not message_ids and not batch and not all:
            raise CommandError("give --message-id ID (repeatable), --batch ID, or --all to cancel every match")
        deliveries = Delivery.objects.all()
        if message_ids:
            try:
                ids = [uuid.UUID(message_id) for message_id in message_ids]
            except ValueError as exc:
                raise CommandError(f"bad message id: {exc}") from exc
            deliveries = deliveries.filter(message_id__in=ids)
        if handler:
            deliveries = deliveries.filter(handler=handler)
        if batch:
            deliveries = deliveries.filter(batch_id=batch)
        if status:
            deliveries = deliveries.filter(status=status)
        self.stdout.write(f"cancelled {deliveries_cancel(deliveries=deliveries)}")
