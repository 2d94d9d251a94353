"""``manage.py queues list|pause|resume``: the admin's and the status page's queue pause in a terminal."""

from django.core.management.base import BaseCommand, CommandError

from tasks.messaging.queue_pauses import paused_queues, queue_pause, queue_resume
from tasks.queues import QUEUES


class Command(BaseCommand):
    help = (
        "List the platform's queues with their paused state, or pause or resume one. A paused queue is not "
        "consumed by any worker (within QUEUE_PAUSE_POLL_SECONDS); its messages wait in the broker."
    )

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["list", "pause", "resume"])
        parser.add_argument("queue", nargs="?", choices=QUEUES)
        parser.add_argument("--reason", default="", help="why (shown in the admin)")

    def handle(self, *args, action, queue, reason, **options):
        if action == "list":
            paused = paused_queues()
            for name in QUEUES:
                self.stdout.write(f"{name:<8} {'paused' if name in paused else 'consumed'}")
            return
        if queue is None:
            raise CommandError(f"'{action}' needs a queue: one of {', '.join(QUEUES)}")
        if action == "pause":
            done = queue_pause(queue=queue, by="manage.py queues", reason=reason)
            self.stdout.write(f"{queue} paused" if done else f"{queue} was paused already")
        else:
            self.stdout.write(f"{queue} resumed" if queue_resume(queue=queue) else f"{queue} was not paused")
