"""``manage.py stream_consume --stream S --group G --handler dotted.path``: one consumer of a group.

The handler path comes from the operator's command line, never from the broker, so importing it
is safe. The consumer is the library other services use (``tasks.streams.consumer``); the
settings give its defaults and each flag overrides one.
"""

import os
import signal
import socket

import redis
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils.module_loading import import_string

from tasks.streams.consumer import RabbitMQConsumer, RedisStreamConsumer


class Command(BaseCommand):
    help = "Run one consumer of a stream's consumer group (Redis Streams or RabbitMQ) with a handler."

    def add_arguments(self, parser):
        parser.add_argument("--stream", required=True, help="e.g. marketplace.components")
        parser.add_argument("--group", required=True, help="the consumer group (RabbitMQ: its queue)")
        parser.add_argument("--handler", required=True, help="dotted path of a callable taking a StreamEvent")
        parser.add_argument("--consumer", default="", help="consumer name (default host:pid)")
        parser.add_argument("--sink", choices=["redis", "rabbitmq"], default="", help="default: the stream's sink")
        parser.add_argument("--claim-idle", type=float, default=settings.STREAMS_CONSUMER_CLAIM_IDLE)
        parser.add_argument("--max-deliveries", type=int, default=settings.STREAMS_CONSUMER_MAX_DELIVERIES)
        parser.add_argument("--batch", type=int, default=settings.STREAMS_CONSUMER_BATCH, help="RabbitMQ: prefetch")
        parser.add_argument("--message-ttl", type=int, default=settings.STREAMS_RABBITMQ_MESSAGE_TTL, help="ms")
        parser.add_argument("--max-priority", type=int, default=settings.STREAMS_RABBITMQ_MAX_PRIORITY)
        parser.add_argument("--quorum", action="store_true", default=settings.STREAMS_RABBITMQ_QUORUM)

    def handle(self, *args, **options):
        try:
            handler = import_string(options["handler"])
        except ImportError as exc:
            raise CommandError(f"cannot import handler {options['handler']!r}: {exc}") from exc
        stream = options["stream"]
        sink = options["sink"] or settings.STREAMS_SINKS.get(stream, settings.STREAMS_DEFAULT_SINK)
        if sink == "redis":
            consumer = RedisStreamConsumer(
                redis.Redis.from_url(settings.STREAMS_REDIS_URL, socket_timeout=30, socket_connect_timeout=5),
                stream=stream,
                group=options["group"],
                consumer=options["consumer"] or f"{socket.gethostname()}:{os.getpid()}",
                handler=handler,
                claim_idle=options["claim_idle"],
                max_deliveries=options["max_deliveries"],
                batch=options["batch"],
                seen_ttl=settings.STREAMS_CONSUMER_SEEN_TTL,
            )
        else:
            consumer = RabbitMQConsumer(
                settings.STREAMS_RABBITMQ_URL,
                stream=stream,
                group=options["group"],
                handler=handler,
                max_deliveries=options["max_deliveries"],
                prefetch=options["batch"],
                message_ttl=options["message_ttl"],
                max_priority=options["max_priority"],
                quorum=options["quorum"],
            )
        signal.signal(signal.SIGTERM, consumer.stop)
        signal.signal(signal.SIGINT, consumer.stop)
        self.stdout.write(f"stream consumer started: {stream} group {options['group']} on {sink}", ending="\n")
        self.stdout.flush()
        consumer.run()
        self.stdout.write("stream consumer stopped")
