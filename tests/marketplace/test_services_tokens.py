"""Services of API tokens: an issued key is shown once and stored only as its hash."""

from datetime import timedelta

import pytest
from django.utils import timezone

from marketplace import services
from marketplace.models import ApiToken
from tests.marketplace.factories import (
    UserFactory,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("null_broker")]


def test_issued_api_key_is_stored_only_as_its_hash():
    user = UserFactory()

    token, key = services.api_token_issue(user=user, name="ci")

    stored = ApiToken.objects.get(key_hash=ApiToken.hash_key(key))
    assert stored.pk == token.pk
    assert (stored.user_id, stored.name) == (user.pk, "ci")
    assert len(key) >= 32
    assert stored.key_prefix == key[: ApiToken.KEY_PREFIX_LENGTH]
    row = ApiToken.objects.filter(pk=token.pk).values().get()
    assert not any(key in str(value) for value in row.values())
    assert key not in str(stored)
    assert not any(key in str(value) for value in vars(token).values())
    assert stored.is_active
    assert timedelta(days=89) < stored.expires_at - timezone.now() <= timedelta(days=90)


def test_issued_api_keys_differ_each_time():
    user = UserFactory()

    keys = {services.api_token_issue(user=user)[1] for _ in range(3)}

    assert len(keys) == 3
    assert ApiToken.objects.filter(user=user).count() == 3
