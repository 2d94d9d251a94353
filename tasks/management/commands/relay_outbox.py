"""``manage.py relay_outbox [--once]``: the Procfile ``relay`` process."""

from django.core.management.base import BaseCommand, CommandError

from tasks.messaging.deliveries import DispatchError
from tasks.messaging.relay import Relay
from tasks.reliability.sweeper import deliveries_resend_stale


class Command(BaseCommand):
    help = "Send outbox rows the commit hook could not send, and re-send deliveries never finished."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="one pass, then exit (for scripts)")
        parser.add_argument("--interval", type=float, default=None, help="seconds between passes")

    def handle(self, *args, **options):
        relay = Relay(resend=deliveries_resend_stale, interval=options["interval"])
        if options["once"]:
            try:
                sent = relay.run_once()
            except DispatchError as exc:
                raise CommandError(f"broker unavailable: {exc}") from exc
            self.stdout.write(f"sent {sent}")
            return
        relay.install_signal_handlers()
        relay.run_forever()
