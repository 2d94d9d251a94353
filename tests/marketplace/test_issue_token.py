"""``manage.py issue_token``: prints a working key once, stores only its hash."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from marketplace.models import ApiToken
from tests.marketplace.factories import UserFactory
from tests.support.api import API, bearer

pytestmark = pytest.mark.django_db


def issue(*args: str) -> str:
    out = StringIO()
    call_command("issue_token", *args, stdout=out, stderr=StringIO())
    return out.getvalue().strip()


def test_issue_token_prints_a_key_that_authenticates_the_user(client):
    UserFactory(username="dave")

    key = issue("dave", "--name", "ci", "--days", "7")

    token = ApiToken.objects.get()
    assert token.user.username == "dave" and token.name == "ci"
    assert token.key_hash == ApiToken.hash_key(key) and key not in token.key_hash
    assert timedelta(days=6, hours=23) < token.expires_at - timezone.now() <= timedelta(days=7)
    assert client.get(f"{API}/me/components", headers=bearer(key)).status_code == 200


def test_issue_token_fails_when_the_user_does_not_exist():
    with pytest.raises(CommandError, match="No user"):
        issue("nobody")
    assert not ApiToken.objects.exists()


@pytest.mark.parametrize("days", ["0", "-1", "91", "3650"])
def test_issue_token_fails_when_days_is_out_of_range(days):
    UserFactory(username="dave")

    with pytest.raises(CommandError, match="--days"):
        issue("dave", "--days", days)
    assert not ApiToken.objects.exists()


def test_issue_token_expires_after_api_token_max_days_at_most(settings):
    settings.API_TOKEN_MAX_DAYS = 30
    UserFactory(username="dave")

    with pytest.raises(CommandError, match="--days must be from 1 to 30"):
        issue("dave", "--days", "31")
    issue("dave")  # the default is the cap when the cap is below 90 days

    assert timedelta(days=29, hours=23) < ApiToken.objects.get().expires_at - timezone.now() <= timedelta(days=30)
