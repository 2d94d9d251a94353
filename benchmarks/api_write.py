"""API write with an event vs the same write without it: anonymous ``POST .../download``, requests/s.

Both sides run the same gunicorn command line (2 sync workers) on loopback; only the WSGI module
differs (``config.wsgi`` vs ``benchmarks.wsgi_without_event``, which makes ``register_event`` a
no-op). A load client in its own process keeps a few connections busy. No Celery worker runs:
the published tasks pile up in Redis and are deleted after each run. Runs alternate platform /
raw so machine noise hits both alike.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SLUG = "bench-download"
WSGI = {"platform": "config.wsgi:application", "raw": "benchmarks.wsgi_without_event:application"}
CONNECTIONS = 4
WARM_UP = 1.5


def _component_slug() -> str:
    from django.contrib.auth import get_user_model

    from marketplace.models import Author, Component

    user, _ = get_user_model().objects.get_or_create(username="bench-author")
    author, _ = Author.objects.get_or_create(user=user, defaults={"display_name": "bench-author"})
    source = "---\nname: bench\nversion: 1.0.0\ndescription: Benchmark component.\n---\nbody\n"
    defaults = {"author": author, "name": "bench", "version": "1.0.0", "source": source}
    Component.objects.update_or_create(slug=SLUG, defaults={**defaults, "status": Component.Status.PUBLISHED})
    return SLUG


def _clean() -> None:
    import redis

    from marketplace.models import Download
    from tasks.models import Delivery, Outbox

    Download.objects.filter(component__slug=SLUG).delete()
    Delivery.objects.all().delete()
    Outbox.objects.all().delete()
    redis.Redis.from_url(os.environ["BENCH_REDIS_URL"]).delete("high", "default", "low")


@contextlib.contextmanager
def _gunicorn(wsgi: str, port: int):
    env = {
        **os.environ,
        "DEBUG": "0",  # DEBUG on would keep every query in memory and slow each request
        "SECRET_KEY": "benchmark-only-secret-key",
        "API_WRITE_RATE_LIMIT": "1000000000/s",  # still counted in Redis, never reached
        "RATELIMIT_REDIS_URL": os.environ["BENCH_REDIS_URL"],  # stays in the benchmark's database
    }
    args = [sys.executable, "-m", "gunicorn", "--workers", "2", "--worker-class", "sync"]
    args += ["--bind", f"127.0.0.1:{port}", "--log-level", "warning", wsgi]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while not _answers(port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"gunicorn {wsgi} did not start:\n{log.read().decode()[-4000:]}")
                time.sleep(0.2)
            yield
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _answers(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/health/live")
        return conn.getresponse().status == 200
    except OSError:
        return False


def _load(port: int, slug: str, seconds: float) -> dict[str, float]:
    """The load client (its own process): requests/s over ``seconds`` after the warm-up."""
    counts = [0] * CONNECTIONS
    failures: list[str] = []
    stop = threading.Event()

    def loop(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            while not stop.is_set():
                # Gunicorn's sync workers close the connection after each response; http.client reconnects.
                conn.request("POST", f"/api/v1/components/{slug}/download", body=b"")
                response = conn.getresponse()
                body = response.read()
                if response.status != 200:
                    failures.append(f"status {response.status}: {body.decode(errors='replace')[:2000]}")
                    stop.set()
                counts[i] += 1
        except Exception as exc:
            failures.append(repr(exc))
            stop.set()

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(CONNECTIONS)]
    for thread in threads:
        thread.start()
    stop.wait(WARM_UP)
    first, started = sum(counts), time.monotonic()
    stop.wait(seconds)
    last, elapsed = sum(counts), time.monotonic() - started
    stop.set()
    for thread in threads:
        thread.join()
    if failures:
        raise SystemExit(f"bad response: {failures[0]}")
    return {"rps": (last - first) / elapsed, "total": sum(counts)}


def _run(side: str, slug: str, seconds: float) -> float:
    from marketplace.models import Download
    from tasks.models import Outbox
    from tests.support.processes import free_port

    _clean()
    port = free_port()
    downloads = Download.objects.filter(component__slug=slug).count()
    with _gunicorn(WSGI[side], port):
        client = [sys.executable, "-m", "benchmarks.api_write", "--client", str(port), slug, str(seconds)]
        done = subprocess.run(client, cwd=ROOT, capture_output=True, text=True, timeout=seconds + 120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"api write {side}: load client failed:\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout)
    added, outbox = Download.objects.filter(component__slug=slug).count() - downloads, Outbox.objects.count()
    expected_outbox = result["total"] if side == "platform" else 0
    if added != result["total"] or outbox != expected_outbox:
        raise RuntimeError(f"api write {side}: {result['total']} requests, {added} downloads, {outbox} outbox rows")
    _clean()
    return result["rps"]


def api_write(repeat: int, seconds: float = 8.0) -> dict[str, list[float]]:
    """Requests/s of the real download view ("platform") and of the same view without the event
    ("raw"), ``repeat`` runs each, alternating."""
    slug = _component_slug()
    results: dict[str, list[float]] = {"platform": [], "raw": []}
    for _ in range(repeat):
        for side, runs in results.items():
            runs.append(_run(side, slug, seconds))
            print(f"api write {side}: {runs[-1]:.0f}/s", flush=True)
    return results


if __name__ == "__main__":
    if sys.argv[1:2] == ["--client"]:
        print(json.dumps(_load(int(sys.argv[2]), sys.argv[3], float(sys.argv[4]))))
        sys.exit()
    sys.path.insert(0, str(ROOT))
    import benchmarks.run  # noqa: F401 (sets the benchmark environment)
    from benchmarks.database import ensure_database

    ensure_database(os.environ["DATABASE_URL"])
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    figures = api_write(repeat=2, seconds=5)
    platform, raw = (statistics.median(figures[side]) for side in ("platform", "raw"))
    print(f"{figures}\nratio {platform / raw:.2f}x (target >= 0.9x)")
