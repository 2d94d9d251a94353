from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from marketplace.models import ApiToken, Rating
from tests.marketplace.factories import ComponentFactory, RatingFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("score", [0, 6])
def test_database_rejects_rating_when_score_out_of_range(score):
    component, user = ComponentFactory(), UserFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        Rating.objects.create(component=component, user=user, score=score)


def test_database_rejects_second_rating_when_same_user_and_component():
    rating = RatingFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        Rating.objects.create(component=rating.component, user=rating.user, score=3)
    assert Rating.objects.count() == 1


def test_api_token_stores_only_the_hash_of_its_key():
    token = ApiToken(user=UserFactory(), expires_at=timezone.now() + timedelta(days=1))
    key = token.set_new_key()
    token.save()
    stored = ApiToken.objects.get(pk=token.pk)
    assert key not in {stored.key_hash, stored.key_prefix, stored.name}
    assert stored.key_hash == ApiToken.hash_key(key)
    assert stored.is_active


def test_api_token_is_inactive_when_expired_or_revoked():
    user = UserFactory()
    expired = ApiToken(user=user, expires_at=timezone.now() - timedelta(seconds=1))
    revoked = ApiToken(user=user, expires_at=timezone.now() + timedelta(days=1), revoked_at=timezone.now())
    assert not expired.is_active
    assert not revoked.is_active
