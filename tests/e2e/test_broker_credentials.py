"""Brokers that want credentials and TLS: a Redis with a password behind TLS (``rediss://``), and a
RabbitMQ user other than guest. A worker runs a task through each; wrong credentials or an
untrusted certificate fail at once with a clear error instead of hanging."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.support.processes import ROOT, CeleryWorker, ManagedProcess, free_port, process_env

pytestmark = pytest.mark.slow

PASSWORD = "s3cret-broker-pw"


def make_certificate(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


class TlsRedisServer(ManagedProcess):
    """A private ``redis-server`` that speaks TLS only and requires a password."""

    ready_marker = "Ready to accept connections"

    def __init__(self, cert: Path, key: Path) -> None:
        self.port = free_port()
        args = [
            shutil.which("redis-server") or "redis-server", "--bind", "127.0.0.1", "--port", "0",
            "--tls-port", str(self.port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
            "--tls-auth-clients", "no", "--requirepass", PASSWORD, "--save", "", "--appendonly", "no",
        ]  # fmt: skip
        super().__init__(args, name="tls-redis")

    def url(self, *, password: str, ca: Path) -> str:
        return f"rediss://:{password}@127.0.0.1:{self.port}/0?ssl_cert_reqs=required&ssl_ca_certs={ca}"


def ping_through(broker_url: str) -> subprocess.CompletedProcess:
    """Send ``tasks.ping`` from a separate process and wait for a worker's answer."""
    script = "from tasks.tasks import ping; print('PONG', ping.delay().get(timeout=60)['pong'])"
    return subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", script],
        cwd=ROOT, env=process_env(CELERY_BROKER_URL=broker_url), capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip


@pytest.fixture
def tls_redis(tmp_path):
    cert, key = make_certificate(tmp_path, "redis")
    with TlsRedisServer(cert, key) as server:
        yield server, cert


def test_a_worker_runs_tasks_through_a_redis_with_a_password_behind_tls(transactional_db, tls_redis):
    server, ca = tls_redis
    url = server.url(password=PASSWORD, ca=ca)

    with CeleryWorker(env=process_env(CELERY_BROKER_URL=url)):
        result = ping_through(url)

    assert "PONG True" in result.stdout, result.stderr[-3000:]


def test_a_wrong_redis_password_fails_at_once_with_a_clear_error(transactional_db, tls_redis):
    server, ca = tls_redis

    result = ping_through(server.url(password="not-the-password", ca=ca))

    assert result.returncode != 0
    assert "invalid username-password pair" in result.stderr or "WRONGPASS" in result.stderr, result.stderr[-3000:]


def test_a_redis_certificate_from_an_untrusted_authority_is_refused(transactional_db, tls_redis, tmp_path):
    server, _ = tls_redis
    other_ca, _ = make_certificate(tmp_path, "other-ca")

    result = ping_through(server.url(password=PASSWORD, ca=other_ca))

    assert result.returncode != 0
    assert "certificate verify failed" in result.stderr, result.stderr[-3000:]


@pytest.fixture
def rabbitmq_user():
    """A RabbitMQ user and vhost of their own (not guest), removed afterwards."""
    if not shutil.which("rabbitmqctl"):
        pytest.skip("rabbitmqctl is not installed: no RabbitMQ on this machine")
    name = f"platform-{uuid.uuid4().hex[:8]}"

    def ctl(*args: str) -> None:
        subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)

    ctl("add_vhost", name)
    ctl("add_user", name, PASSWORD)
    ctl("set_permissions", "-p", name, name, ".*", ".*", ".*")
    try:
        yield name
    finally:
        ctl("delete_user", name)
        ctl("delete_vhost", name)


def test_a_worker_runs_tasks_through_rabbitmq_as_a_user_other_than_guest(transactional_db, rabbitmq_user):
    url = f"amqp://{rabbitmq_user}:{PASSWORD}@127.0.0.1:5672/{rabbitmq_user}"

    with CeleryWorker(env=process_env(CELERY_BROKER_URL=url)):
        result = ping_through(url)

    assert "PONG True" in result.stdout, result.stderr[-3000:]
    refused = ping_through(f"amqp://{rabbitmq_user}:wrong@127.0.0.1:5672/{rabbitmq_user}")
    assert refused.returncode != 0
    assert "ACCESS_REFUSED" in refused.stderr, refused.stderr[-3000:]
