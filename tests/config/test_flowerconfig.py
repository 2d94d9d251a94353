"""Flower as the Procfile runs it (``--conf=config/flowerconfig.py``): behind auth, API included."""

import base64
import stat
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.processes import Flower

pytestmark = pytest.mark.slow


def http_status(url: str, credentials: str | None = None) -> int:
    request = urllib.request.Request(url)
    if credentials:
        request.add_header("Authorization", "Basic " + base64.b64encode(credentials.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.fixture
def flower(redis_client):
    with Flower(basic_auth="ops:s3cret-pw") as process:
        yield process


def test_flower_refuses_requests_without_the_right_credentials(flower):
    for path in ("", "workers", "tasks", "api/workers", "api/tasks"):
        assert http_status(flower.url + path) == 401, path
        assert http_status(flower.url + path, "ops:wrong") == 401, path
    assert http_status(flower.url, "ops:s3cret-pw") == 200
    assert http_status(flower.url + "api/workers", "ops:s3cret-pw") == 200


def test_flower_keeps_its_state_in_its_db_file_readable_by_its_owner_only(flower):
    db = Path(flower.env["FLOWER_DB"])
    files = [path for path in db.parent.iterdir() if path.name.startswith(db.name)]
    assert files
    # A pickle: anyone who could write it would run code as Flower.
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, oct(path.stat().st_mode)


@pytest.mark.parametrize("debug", ["1", "0"])
def test_flower_refuses_to_start_without_credentials(redis_client, debug):
    process = Flower(basic_auth=None, env={"DEBUG": debug, "SECRET_KEY": "a-production-like-secret"})
    process.start(wait=False)
    try:
        assert process.proc.wait(timeout=60) != 0
    finally:
        process.stop()
    assert "refusing to start without authentication" in process.log()


def test_flower_refuses_to_start_with_an_unauthenticated_api(redis_client):
    process = Flower(env={"FLOWER_UNAUTHENTICATED_API": "true"})
    process.start(wait=False)
    try:
        assert process.proc.wait(timeout=60) != 0
    finally:
        process.stop()
    assert "FLOWER_UNAUTHENTICATED_API is set" in process.log()
