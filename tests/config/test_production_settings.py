"""Production settings: ``check --deploy`` is clean with production variables, and the API's
rate-limit cache follows the broker (README "API")."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_manage(*args: str, **env_overrides: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "RATELIMIT_", "HTTPS", "DEBUG"))}
    env.update(DJANGO_SETTINGS_MODULE="config.settings", **env_overrides)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def production_env(**overrides: str) -> dict[str, str]:
    env = {
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(64),
        "HTTPS": "1",
        "ALLOWED_HOSTS": "example.com",
        "FLOWER_BASIC_AUTH": "a:b",
    }
    env.update(overrides)
    return env


def test_check_deploy_reports_nothing_with_production_variables():
    result = run_manage("check", "--deploy", "--fail-level", "WARNING", **production_env())

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
    assert "WARNING" not in result.stderr.upper()


def test_check_deploy_warns_without_https_settings():
    # The same command does see the gaps when HTTPS is off: the clean run above is not vacuous.
    result = run_manage("check", "--deploy", "--fail-level", "WARNING", **production_env(HTTPS="0"))

    assert result.returncode != 0
    assert "security.W004" in result.stderr and "security.W008" in result.stderr


PAGES_SCRIPT = """
from django.test import Client
client = Client(HTTP_HOST="example.com", raise_request_exception=False)
for url in ["/api/v1/docs", "/admin/login/", "/api/v1/openapi.json"]:
    page = client.get(url, HTTP_X_FORWARDED_PROTO="https")
    print("PAGE", url, page.status_code)
print("HSTS", page.get("Strict-Transport-Security"))
plain = client.get("/api/v1/openapi.json", HTTP_X_FORWARDED_PROTO="http")
print("PLAIN", plain.status_code, plain.get("Location"))
"""


def test_pages_with_static_files_render_in_production_after_collectstatic(tmp_path):
    # With DEBUG off whitenoise serves hashed files from STATIC_ROOT, so the release must run
    # collectstatic: without it every page with {% static %} (admin, API docs) is a 500.
    env = production_env(VAR_DIR=str(tmp_path))
    collected = run_manage("collectstatic", "--noinput", "-v0", **env)
    assert collected.returncode == 0, collected.stderr
    assert list((tmp_path / "staticfiles" / "ninja").glob("swagger-ui-bundle.*.js"))

    result = run_manage("shell", "-c", PAGES_SCRIPT, **env)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "PAGE /api/v1/docs 200" in lines
    assert "PAGE /admin/login/ 200" in lines
    assert "PAGE /api/v1/openapi.json 200" in lines
    # includeSubDomains and preload bind every subdomain (and, once preloaded, browsers for
    # months): an operator opts in, the settings do not.
    assert "HSTS max-age=31536000" in lines
    # The proxy says the client came over plain HTTP: redirected to HTTPS.
    assert "PLAIN 301 https://example.com/api/v1/openapi.json" in lines


def test_hsts_covers_subdomains_and_asks_for_preload_only_when_the_operator_opts_in(tmp_path):
    env = production_env(VAR_DIR=str(tmp_path), SECURE_HSTS_INCLUDE_SUBDOMAINS="1", SECURE_HSTS_PRELOAD="1")
    assert run_manage("collectstatic", "--noinput", "-v0", **env).returncode == 0

    result = run_manage("shell", "-c", PAGES_SCRIPT, **env)

    assert "HSTS max-age=31536000; includeSubDomains; preload" in result.stdout.splitlines()
    deploy = run_manage("check", "--deploy", "--fail-level", "WARNING", **env)
    assert deploy.returncode == 0, deploy.stderr


def test_debug_is_off_unless_the_environment_turns_it_on():
    script = "from django.conf import settings; print('DEBUG', settings.DEBUG)"

    assert "DEBUG False" in run_manage("shell", "-c", script, SECRET_KEY=secrets.token_urlsafe(64)).stdout
    assert "DEBUG True" in run_manage("shell", "-c", script, DEBUG="1").stdout


def test_settings_refuse_to_load_without_secret_key_when_debug_is_off():
    result = run_manage("check", **production_env(SECRET_KEY=""))

    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def ratelimit_cache(**env: str) -> dict:
    script = "from django.conf import settings; import json; print(json.dumps(settings.CACHES['ratelimit']))"
    result = run_manage("shell", "-c", script, DEBUG="1", **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_rate_limit_cache_uses_database_1_of_the_redis_broker_by_default():
    cache = ratelimit_cache(CELERY_BROKER_URL="redis://redis.internal:6380/0")

    assert cache["BACKEND"] == "django.core.cache.backends.redis.RedisCache"
    assert cache["LOCATION"] == "redis://redis.internal:6380/1"


def test_rate_limit_cache_uses_ratelimit_redis_url_when_set():
    cache = ratelimit_cache(
        CELERY_BROKER_URL="amqp://guest:guest@127.0.0.1:5672//", RATELIMIT_REDIS_URL="redis://127.0.0.1:6379/10"
    )

    assert cache["LOCATION"] == "redis://127.0.0.1:6379/10"


def test_rate_limit_cache_falls_back_to_process_memory_with_rabbitmq_and_no_redis_url():
    cache = ratelimit_cache(CELERY_BROKER_URL="amqp://guest:guest@127.0.0.1:5672//")

    assert cache["BACKEND"] == "django.core.cache.backends.locmem.LocMemCache"


def test_settings_refuse_session_bounds_that_would_cut_healthy_tasks_short():
    too_short_idle = run_manage("check", DEBUG="1", DATABASE_IDLE_IN_TRANSACTION_TIMEOUT="30")
    too_long_lock = run_manage("check", DEBUG="1", DATABASE_LOCK_TIMEOUT="35")
    turned_off = run_manage("check", DEBUG="1", DATABASE_IDLE_IN_TRANSACTION_TIMEOUT="0", DATABASE_LOCK_TIMEOUT="0")

    assert too_short_idle.returncode != 0 and "DATABASE_IDLE_IN_TRANSACTION_TIMEOUT >" in too_short_idle.stderr
    assert too_long_lock.returncode != 0 and "DATABASE_LOCK_TIMEOUT <" in too_long_lock.stderr
    assert turned_off.returncode == 0, turned_off.stderr
