"""A broker outage that only the test's own processes see, on Redis and on RabbitMQ.

On Redis the test runs a private ``redis-server`` and stops it. RabbitMQ is one server shared by
everyone on the machine (other tests, other vhosts), so it is never stopped: the test's processes
reach it through a ``socat`` TCP proxy instead, and stopping the proxy (its listener and every
forwarded connection, one process group) is the outage: connections drop, new ones are refused,
as if the broker had stopped. Messages already in RabbitMQ stay there, as after a real restart of
a durable broker.
"""

from __future__ import annotations

import shutil
import socket
import time
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings

from tests.support.processes import ManagedProcess, RedisServer, free_port


class TcpProxy(ManagedProcess):
    """``socat`` forwarding a free local port to ``target_host:target_port``, one child per connection."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.port = free_port()
        args = [
            shutil.which("socat") or "socat",
            f"TCP-LISTEN:{self.port},bind=127.0.0.1,fork,reuseaddr",
            f"TCP:{target_host}:{target_port}",
        ]
        super().__init__(args, name="broker-proxy")

    def start(self, *, wait: bool = True, timeout: float = 60) -> TcpProxy:
        super().start(wait=False)
        if wait:
            self._wait_listening(timeout)
        return self

    def _wait_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise TimeoutError(f"socat did not listen on {self.port} within {timeout}s:\n{self.log()}")


class StoppableBroker:
    """The tests' broker behind something this test may stop and start: ``url`` for the processes."""

    def __init__(self) -> None:
        broker_url = settings.CELERY_BROKER_URL
        if broker_url.startswith("redis"):
            self.process: ManagedProcess = RedisServer()
            self.url = self.process.url
            return
        if not shutil.which("socat"):
            pytest.skip("a RabbitMQ outage needs socat (apt-get install socat) to cut only this test's connections")
        parts = urlsplit(broker_url)
        self.process = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5672)
        auth = parts.netloc.rpartition("@")[0]
        host = f"127.0.0.1:{self.process.port}"
        self.url = urlunsplit(parts._replace(netloc=f"{auth}@{host}" if auth else host))

    def start(self) -> StoppableBroker:
        self.process.start()
        return self

    def stop(self) -> None:
        self.process.stop(timeout=5)
