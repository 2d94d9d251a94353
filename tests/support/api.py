"""Helpers of the API tests: the API's root, auth headers and the check of an error answer."""

from __future__ import annotations

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
