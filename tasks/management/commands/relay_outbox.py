"""``manage.py relay_outbox [--once]``: the Procfile ``relay`` process."""

from django.core.management.base import BaseCommand, CommandError

from tasks.batches.completion import batches_finish
from tasks.messaging.deliveries import DispatchError
from tasks.messaging.relay import Relay
from tasks.monitoring.tracing import tracing_configure
from tasks.reliability.delayed import deliveries_send_due
from tasks.reliability.flow_limits import deliveries_release_allowed
from tasks.reliability.hard_stop import deliveries_stop_overdue
from tasks.reliability.replanning import deliveries_replan
from tasks.reliability.sweeper import StaleDeliverySweeper, deliveries_resend_stale
from tasks.scheduling.runs import scheduled_runs_send_unsent
from tasks.streams.appends import stream_relay_pass

EXTRA_PASSES = [
    ("delayed", deliveries_send_due),
    ("waiting", deliveries_release_allowed),
    ("hard stop", deliveries_stop_overdue),
    ("batches", batches_finish),
    ("streams", stream_relay_pass),
]


class Command(BaseCommand):
    help = (
        "Send outbox rows the committing process could not send, re-send deliveries the broker lost, plan again "
        "deliveries whose predicate failed, send Beat's recorded runs the broker refused, release delayed "
        "deliveries when due and waiting ones when their rate or concurrency limit allows, stop running "
        "ones that ignored a cancel (CANCEL_HARD_STOP_AFTER), finish batches "
        "whose members all finished, and append committed events of streamed classes to their streams."
    )

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="one pass, then exit (for scripts)")
        parser.add_argument("--interval", type=float, default=None, help="seconds between passes")

    def handle(self, *args, **options):
        tracing_configure(process="relay")
        if options["once"]:
            # One look at everything now: no throttle.
            relay = Relay(
                resend=deliveries_resend_stale,
                replan=deliveries_replan,
                scheduled=scheduled_runs_send_unsent,
                extra=EXTRA_PASSES,
                interval=options["interval"],
            )
            try:
                sent = relay.run_once()
            except DispatchError as exc:
                raise CommandError(f"broker unavailable: {exc}") from exc
            self.stdout.write(f"sent {sent}")
            return
        relay = Relay(
            resend=StaleDeliverySweeper(),
            replan=deliveries_replan,
            scheduled=scheduled_runs_send_unsent,
            extra=EXTRA_PASSES,
            interval=options["interval"],
        )
        relay.install_signal_handlers()
        relay.run_forever()
