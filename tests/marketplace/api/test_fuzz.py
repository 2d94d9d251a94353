"""Fuzzing: schemathesis generates requests from the API's own OpenAPI document, valid and
invalid, and sends them to the Django app in process (WSGI). No answer may be a 5xx, and every
answer must match the document: a documented status, content type and body schema.

Bounded: ``MAX_EXAMPLES`` per operation (and generation mode), so the run stays well under a
minute. Requests carry a valid token, so the authenticated paths are explored, not just 401s;
a known component and author exist, so paths with real slugs are reached too.
"""

from __future__ import annotations

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from config.wsgi import application
from tests.marketplace.factories import (
    AuthorFactory,
    NotificationFactory,
    PublishedComponentFactory,
    UserFactory,
    issue_key,
)
from tests.support.api import bearer

MAX_EXAMPLES = 30

pytestmark = pytest.mark.usefixtures("api_rate_limit_cache")

schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", application)

# Not negative_data_rejection: the API ignores query parameters it does not know (as most HTTP
# APIs do, for cache busters and newer clients), which that check counts as accepting bad data.
# Bad values of known parameters and bodies are refused with 4xx; the endpoint tests beside
# this file (one per router) cover them.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture
def keep_test_connection():
    """The WSGI handler closes the database connection at the end of each request, which would
    close the test's transaction; Django's test client disconnects the same handler."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def fuzz_key(db, keep_test_connection) -> str:
    # The document's examples (component "hello" by "admin") exist, so the examples phase
    # reaches the success paths of detail, rating, download and author profile.
    user = UserFactory(username="admin")
    PublishedComponentFactory(author=AuthorFactory(user=user), slug="hello")
    NotificationFactory(user=user)
    return issue_key(user)


@pytest.mark.slow
@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_api_never_answers_5xx_and_always_matches_its_schema(case, fuzz_key):
    case.call_and_validate(headers=bearer(fuzz_key), checks=CHECKS)
