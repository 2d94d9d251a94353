"""Test-wide environment, loaded with ``-p tests.environment`` before Django reads settings.

Tests use their own Redis database (15), so a running ``make run`` on database 0 is untouched.
``TEST_BROKER_URL`` points the suite at another broker (RabbitMQ).

Under pytest-xdist (``make test`` runs most of the suite in two processes) each process gets
its own Redis database (the given one, the one below it, ...) and its own ``VAR_DIR`` (logs,
SQLite test database, metric files); pytest-django gives each its own test database. Tests that
share what no process can own (the machine's RabbitMQ vhost) are in one ``xdist_group``.
"""

import os
from pathlib import Path
from urllib.parse import urlsplit

os.environ.setdefault("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
if _worker:
    if os.environ.get("TEST_BROKER_URL", "").startswith("amqp"):
        raise RuntimeError("the suite on RabbitMQ shares one vhost: run it in one process (make test-broker, no -n)")
    _index = int(_worker.removeprefix("gw"))
    _redis = urlsplit(os.environ["TEST_REDIS_URL"])
    _database = int(_redis.path.strip("/") or 0) - _index
    if _database < 0:
        raise RuntimeError(f"{_worker}: no Redis database below {_redis.path} left for this process")
    os.environ["TEST_REDIS_URL"] = _redis._replace(path=f"/{_database}").geturl()
    _var = Path(os.environ.get("VAR_DIR", Path(__file__).resolve().parents[1] / "var"))
    os.environ["VAR_DIR"] = str(_var / f"xdist-{_worker}")

os.environ["CELERY_BROKER_URL"] = os.environ.get("TEST_BROKER_URL", os.environ["TEST_REDIS_URL"])
# Job rate-limit windows in the tests' Redis too (the redis_client fixture empties them).
os.environ["FLOW_LIMITS_REDIS_URL"] = os.environ["TEST_REDIS_URL"]
os.environ.setdefault("DEBUG", "1")
os.environ.setdefault("EXTRA_INSTALLED_APPS", "tests.support.ledger")
