"""Real platform processes for tests: Celery workers (and later Beat, relay) as subprocesses.

They run against the test database and the tests' Redis, so tests that use them need
committed data (``transactional_db``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import quote

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]
LOG_DIR = Path(settings.VAR_DIR) / "test-logs"


def database_url() -> str:
    """A DATABASE_URL for the database this test run uses (the test database, once created)."""
    conf = connection.settings_dict
    if conf["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{conf['NAME']}"
    user = quote(conf.get("USER") or "")
    password = f":{quote(conf['PASSWORD'])}" if conf.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    host = conf.get("HOST") or "localhost"
    port = f":{conf['PORT']}" if conf.get("PORT") else ""
    return f"postgres://{auth}{host}{port}/{conf['NAME']}"


def process_env(**overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url(),
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
        DJANGO_SETTINGS_MODULE="config.settings",
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    return env


class ManagedProcess:
    """A subprocess in its own process group, with its output in a log file."""

    ready_marker: str = ""

    def __init__(self, args: list[str], *, name: str, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.name = name
        self.env = env or process_env()
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = LOG_DIR / f"{name}-{uuid.uuid4().hex[:8]}.log"
        self.proc: subprocess.Popen | None = None

    def start(self, *, wait: bool = True, timeout: float = 60) -> ManagedProcess:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.args, env=self.env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        if wait and self.ready_marker:
            self.wait_for_log(self.ready_marker, timeout=timeout)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, text: str, *, timeout: float = 60, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log().count(text) >= count:
                return
            if self.proc and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            time.sleep(0.1)
        raise TimeoutError(f"{self.name}: {text!r} not seen within {timeout}s:\n{self.log()[-4000:]}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, signum: int) -> None:
        if self.running:
            os.kill(self.proc.pid, signum)

    def kill(self) -> None:
        """kill -9 of the process and all its children (the whole process group)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, *, timeout: float = 30) -> None:
        """SIGTERM, then kill -9 of the group if it has not gone within ``timeout``."""
        if self.running:
            self.signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=timeout)
        self.kill()

    def __enter__(self) -> ManagedProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class CeleryWorker(ManagedProcess):
    """``celery -A config worker`` on the given queues, prefork by default, prefetch 1."""

    ready_marker = " ready."

    def __init__(
        self,
        *,
        queues: str = "high,default,low",
        concurrency: int = 2,
        env: dict[str, str] | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        hostname = f"test-{uuid.uuid4().hex[:8]}@%h"
        args = [
            sys.executable, "-m", "celery", "-A", "config", "worker",
            "-Q", queues, "-c", str(concurrency), "-n", hostname,
            "--prefetch-multiplier", "1", "--without-gossip", "--without-mingle",
            "-l", "INFO", *extra_args,
        ]  # fmt: skip
        super().__init__(args, name="worker", env=env)
        self.hostname = hostname


def free_port() -> int:
    """A TCP port nobody listens on right now (bind port 0, let the kernel choose)."""

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer(ManagedProcess):
    """A private ``redis-server`` on a free port, no persistence: a broker a test may stop or freeze."""

    ready_marker = "Ready to accept connections"

    def __init__(self) -> None:

        self.port = free_port()
        binary = shutil.which("redis-server") or "redis-server"
        args = [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no"]
        super().__init__(args, name="redis")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def freeze(self) -> None:
        """SIGSTOP: connections are accepted by the kernel but never answered (a hung broker)."""
        self.signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.signal(signal.SIGCONT)

    def stop(self, *, timeout: float = 30) -> None:
        self.thaw()
        super().stop(timeout=timeout)


class Flower(ManagedProcess):
    """``celery -A config flower`` with the project's flowerconfig, on a free port."""

    ready_marker = "Visit me at"

    def __init__(self, *, basic_auth: str | None = "tester:flower-pw", env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        overrides = {"FLOWER_DB": str(LOG_DIR / f"flower-{uuid.uuid4().hex[:8]}.db")}
        if basic_auth:
            overrides["FLOWER_BASIC_AUTH"] = basic_auth
        environment = process_env(**overrides)
        environment.update(env or {})
        if not basic_auth:
            environment.pop("FLOWER_BASIC_AUTH", None)
        args = [
            sys.executable, "-m", "celery", "-A", "config", "flower", "--conf=config/flowerconfig.py",
            "--address=127.0.0.1", f"--port={self.port}",
        ]  # fmt: skip
        super().__init__(args, name="flower", env=environment)
        self.basic_auth = basic_auth

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"


class DurableRedisServer(ManagedProcess):
    """A private ``redis-server`` with append-only persistence (fsync always), restartable on
    the same port with the same data: a broker that is stopped and started again."""

    ready_marker = "Ready to accept connections"

    def __init__(self, data_dir: Path) -> None:

        self.port = free_port()
        data_dir.mkdir(parents=True, exist_ok=True)
        binary = shutil.which("redis-server") or "redis-server"
        args = [
            binary, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(data_dir),
            "--save", "", "--appendonly", "yes", "--appendfsync", "always",
        ]  # fmt: skip
        super().__init__(args, name="durable-redis")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def restart(self) -> None:
        self.stop()
        self.start()


class Relay(ManagedProcess):
    """``manage.py relay_outbox``: the outbox relay and delivery sweeper."""

    ready_marker = "outbox relay started"

    def __init__(self, *, env: dict[str, str] | None = None) -> None:
        super().__init__([sys.executable, "manage.py", "relay_outbox"], name="relay", env=env)


class CeleryBeat(ManagedProcess):
    """``celery -A config beat`` with the platform scheduler; its schedule file under VAR_DIR."""

    ready_marker = "beat: Starting..."

    def __init__(
        self,
        *,
        scheduler: str = "tasks.scheduling.scheduler:PlatformScheduler",
        env: dict[str, str] | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        schedule_file = LOG_DIR / f"celerybeat-schedule-{uuid.uuid4().hex[:8]}"
        args = [
            sys.executable, "-m", "celery", "-A", "config", "beat",
            "-S", scheduler, "--schedule", str(schedule_file), "-l", "INFO", *extra_args,
        ]  # fmt: skip
        super().__init__(args, name="beat", env=env)

    def sent(self, schedule_name: str) -> list[str]:
        """The ``sent <name> at <time> id=<id>`` lines this Beat logged for ``schedule_name``."""
        marker = f"PlatformScheduler: sent {schedule_name} at "
        return [line for line in self.log().splitlines() if marker in line]
