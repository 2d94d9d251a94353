"""Plain helpers of the API tests: the API's root, auth headers and the check of an error answer.

Fixtures live in conftest.py files and factories in factories.py. ``issue_key`` and the
``api_rate_limit_cache`` fixture are re-exported here only for tests/e2e/test_api_flow.py,
which imports them from this module.
"""

from __future__ import annotations

from tests.marketplace.api.conftest import api_rate_limit_cache
from tests.marketplace.factories import issue_key

API = "/api/v1"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_error(response, status: int, code: str) -> dict:
    """Check an error answer: its status, its code and a readable detail; return its body."""
    assert response.status_code == status, response.content
    body = response.json()
    assert body["code"] == code
    assert isinstance(body["detail"], str) and body["detail"]
    return body


__all__ = ["API", "api_rate_limit_cache", "assert_error", "bearer", "issue_key"]
