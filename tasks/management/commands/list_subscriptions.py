"""``manage.py list_subscriptions``: every message type and who handles it, sync or async."""

from django.core.management.base import BaseCommand

from tasks.bus import get_message_broker


class Command(BaseCommand):
    help = "List every subscription of the message bus."

    def handle(self, *args, **options):
        subscriptions = sorted(
            get_message_broker().subscriptions(), key=lambda s: (s.message_type.message_name, s.handler_path)
        )
        if not subscriptions:
            self.stdout.write("no subscriptions")
            return
        width = max(len(s.message_type.message_name) for s in subscriptions)
        for s in subscriptions:
            mode = f"async queue={s.queue_name}" if s.is_async else "sync"
            predicate = " (with predicate)" if s.predicate else ""
            self.stdout.write(f"{s.message_type.message_name:<{width}}  {mode:<20} {s.handler_path}{predicate}")
