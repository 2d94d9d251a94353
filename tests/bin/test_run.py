"""``make run`` (bin/run.py) from a fresh state, with no Redis answering at the broker URL."""

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.processes import ROOT, free_port
from tests.support.waiting import wait_until

RUN = ROOT / "bin" / "run.py"


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def _port_open(port: int) -> bool:

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def load_run_module():
    spec = importlib.util.spec_from_file_location("bin_run", RUN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("url", "printed"),
    [
        ("redis://:s3cret@redis.internal:6379/0", "redis://:***@redis.internal:6379/0"),
        ("amqps://ops:s3cret@mq.internal:5671/prod", "amqps://ops:***@mq.internal:5671/prod"),
        ("postgres://app:p%40ss@db:5432/app?sslmode=require", "postgres://app:***@db:5432/app?sslmode=require"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("amqp://guest@127.0.0.1:5672//", "amqp://guest@127.0.0.1:5672//"),
    ],
)
def test_urls_are_printed_with_their_password_masked(url, printed):
    assert load_run_module().mask_url(url) == printed


@pytest.mark.slow
def test_make_run_starts_a_private_redis_and_every_process_then_stops_them_all(tmp_path: Path):
    redis_port, web_port, flower_port = free_port(), free_port(), free_port()
    # Production-like environment: DEBUG unset (the launcher turns it on), secrets given.
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "FLOWER_BASIC_AUTH", "DEBUG")}
    env.update(
        VAR_DIR=str(tmp_path / "var"),
        # Nothing answers there: make run starts a private Redis, with this password.
        CELERY_BROKER_URL=f"redis://:given-redis-secret@127.0.0.1:{redis_port}/0",
        FLOWER_BASIC_AUTH="ops:given-flower-secret",
        WEB_PORT=str(web_port),
        FLOWER_PORT=str(flower_port),
        DJANGO_SUPERUSER_PASSWORD="pw-for-the-test",
        EXTRA_INSTALLED_APPS="",
        PATH=f"{Path(sys.executable).parent}:{env['PATH']}",
    )
    log = (tmp_path / "run.log").open("wb")
    run = subprocess.Popen(
        [sys.executable, "bin/run.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    output = lambda: (tmp_path / "run.log").read_text(errors="replace")  # noqa: E731
    try:
        wait_until(lambda: " ready." in output(), timeout=120, message=output()[-3000:])
        assert "started a private Redis" in output()
        assert "password from DJANGO_SUPERUSER_PASSWORD" in output()
        assert "basic auth from FLOWER_BASIC_AUTH" in output()
        assert f"broker: redis://:***@127.0.0.1:{redis_port}/0" in output()
        assert "given-flower-secret" not in output() and "given-redis-secret" not in output()
        wait_until(lambda: _status(f"http://127.0.0.1:{web_port}/admin/login/") == 200, timeout=60)
        wait_until(lambda: _status(f"http://127.0.0.1:{flower_port}/") == 401, timeout=60)

        # A task sent from a shell runs on the worker; get() reads its stored result.
        shell = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c",
             "from tasks.tasks import ping; print(ping.delay().get(timeout=30)['pong'])"],
            check=False, cwd=ROOT, env={**env, "DEBUG": "1"}, capture_output=True, text=True, timeout=90,
        )  # fmt: skip
        assert shell.stdout.strip().endswith("True"), shell.stderr[-2000:]
    finally:
        run.send_signal(signal.SIGTERM)
        try:
            run.wait(timeout=60)
        finally:
            if run.poll() is None:
                os.killpg(run.pid, signal.SIGKILL)
    assert "stopped the private Redis" in output()
    time.sleep(0.5)
    for port in (redis_port, web_port, flower_port):
        assert not _port_open(port), f"port {port} still open after SIGTERM"
