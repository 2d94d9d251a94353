"""Test-wide environment, loaded with ``-p tests.environment`` before Django reads settings.

Tests use their own Redis database (15), so a running ``make run`` on database 0 is untouched.
``TEST_BROKER_URL`` points the suite at another broker (RabbitMQ).
"""

import os

os.environ.setdefault("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
os.environ["CELERY_BROKER_URL"] = os.environ.get("TEST_BROKER_URL", os.environ["TEST_REDIS_URL"])
# Job rate-limit windows in the tests' Redis too (the redis_client fixture empties them).
os.environ["FLOW_LIMITS_REDIS_URL"] = os.environ["TEST_REDIS_URL"]
os.environ.setdefault("DEBUG", "1")
os.environ.setdefault("EXTRA_INSTALLED_APPS", "tests.support.ledger")
