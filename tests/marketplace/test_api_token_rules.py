"""ApiToken's own rules, whoever saves it (admin, command, shell): expiry is capped by
API_TOKEN_MAX_DAYS and revocation is one-way."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from marketplace.models import ApiToken
from tests.marketplace.factories import UserFactory, issue_key

pytestmark = pytest.mark.django_db


def new_token(**fields) -> ApiToken:
    token = ApiToken(user=UserFactory(), **{"expires_at": timezone.now() + timedelta(days=1), **fields})
    token.set_new_key()
    return token


def test_a_token_cannot_expire_later_than_api_token_max_days_after_it_was_issued(settings):
    settings.API_TOKEN_MAX_DAYS = 90

    with pytest.raises(ValidationError, match="90 days"):
        new_token(expires_at=timezone.now() + timedelta(days=91)).save()
    token = new_token(expires_at=timezone.now() + timedelta(days=89))
    token.save()

    token.expires_at = token.created_at + timedelta(days=90, minutes=1)  # extended later: still capped
    with pytest.raises(ValidationError, match="90 days"):
        token.save()
    with pytest.raises(ValidationError):
        token.full_clean()


def test_a_revoked_token_stays_revoked_when_saved_with_revoked_at_cleared():
    token = new_token()
    token.save()
    token.revoke()
    revoked_at = ApiToken.objects.get().revoked_at

    stale = ApiToken.objects.get()
    stale.revoked_at = None
    stale.name = "renamed"
    stale.save()

    token = ApiToken.objects.get()
    assert (token.revoked_at, token.name, token.is_active) == (revoked_at, "renamed", False)


def test_a_copy_loaded_before_the_revocation_does_not_undo_it():
    token = new_token()
    token.save()
    loaded_earlier = ApiToken.objects.get()

    token.revoke()
    loaded_earlier.save()

    assert ApiToken.objects.get().revoked_at is not None


def test_clearing_revoked_at_in_bulk_leaves_revoked_tokens_revoked():
    user = UserFactory()
    issue_key(user)
    issue_key(user)
    ApiToken.objects.first().revoke()

    ApiToken.objects.update(revoked_at=None, name="bulk")

    assert ApiToken.objects.filter(revoked_at__isnull=False).count() == 1
    assert set(ApiToken.objects.values_list("name", flat=True)) == {"bulk"}


def test_revoking_twice_keeps_the_first_time():
    token = new_token()
    token.save()
    token.revoke()
    first = ApiToken.objects.get().revoked_at

    ApiToken.objects.get().revoke()

    assert ApiToken.objects.get().revoked_at == first
