"""``make run`` (bin/run.py) from a fresh state, with no Redis answering at the broker URL."""

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

pytestmark = pytest.mark.slow


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


def test_make_run_starts_a_private_redis_and_every_process_then_stops_them_all(tmp_path: Path):
    redis_port, web_port, flower_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "FLOWER_BASIC_AUTH")}
    env.update(
        VAR_DIR=str(tmp_path / "var"),
        CELERY_BROKER_URL=f"redis://127.0.0.1:{redis_port}/0",  # nothing answers there
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
        assert "basic auth flower:" in output()  # generated and printed
        wait_until(lambda: _status(f"http://127.0.0.1:{web_port}/admin/login/") == 200, timeout=60)
        wait_until(lambda: _status(f"http://127.0.0.1:{flower_port}/") == 401, timeout=60)

        # A task sent from a shell runs on the worker; get() reads its stored result.
        shell = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c",
             "from tasks.tasks import ping; print(ping.delay().get(timeout=30)['pong'])"],
            check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=90,
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
