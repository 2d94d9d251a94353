"""The API's OpenAPI document and its interactive docs page."""

from __future__ import annotations

import pytest

from tests.support.api import API

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("api_rate_limit_cache")]


def test_openapi_document_lists_every_endpoint_with_bearer_security(client):
    schema = client.get(f"{API}/openapi.json").json()

    assert set(schema["paths"]) == {
        f"{API}/components",
        f"{API}/components/{{slug}}",
        f"{API}/components/{{slug}}/versions",
        f"{API}/components/{{slug}}/rating",
        f"{API}/components/{{slug}}/download",
        f"{API}/authors/{{username}}",
        f"{API}/me/components",
        f"{API}/me/notifications",
        f"{API}/me/notifications/read",
    }
    assert schema["components"]["securitySchemes"]["TokenAuth"] == {"type": "http", "scheme": "bearer"}
    assert schema["paths"][f"{API}/components"]["get"]["security"] == [{"TokenAuth": []}, {}]
    upload = schema["paths"][f"{API}/components"]["post"]
    assert upload["security"] == [{"TokenAuth": []}]
    assert {"201", "401", "413", "422", "429"} <= set(upload["responses"])


def test_docs_page_is_served(client):
    assert client.get(f"{API}/docs").status_code == 200
