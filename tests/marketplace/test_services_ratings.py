"""Services of ratings: component_rate (score, average, count, ComponentRated) and the author's
reputation recalculated from ratings."""

from decimal import Decimal

import pytest

from marketplace import services
from marketplace.errors import Conflict, PermissionDenied, ValidationFailed
from marketplace.events import (
    ComponentRated,
)
from marketplace.models import Author, Component, Rating
from tests.marketplace.factories import (
    FANCY_BUTTON_SOURCE,
    AuthorFactory,
    ComponentFactory,
    PublishedComponentFactory,
    UserFactory,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("null_broker")]


# --- component_rate -------------------------------------------------------------------------


@pytest.mark.parametrize("score", [0, 6, -1, True, False, "4", 4.0, None], ids=repr)
def test_rating_is_refused_when_score_is_not_a_whole_number_from_1_to_5(null_broker, committed, score):
    component = PublishedComponentFactory()

    with committed(), pytest.raises(ValidationFailed) as info:
        services.component_rate(component=component, user=UserFactory(), score=score)

    assert info.value.message == "A rating must be a whole number from 1 to 5."
    assert not Rating.objects.exists()
    assert null_broker.published == []


@pytest.mark.parametrize("status", [Component.Status.PENDING, Component.Status.REJECTED])
def test_rating_is_refused_when_component_is_not_published(null_broker, committed, status):
    component = ComponentFactory(status=status)

    with committed(), pytest.raises(Conflict):
        services.component_rate(component=component, user=UserFactory(), score=5)

    assert not Rating.objects.exists()
    assert null_broker.published == []


def test_rating_is_refused_when_component_was_unpublished_after_it_was_loaded():
    component = PublishedComponentFactory()
    services.component_new_version(component=Component.objects.get(pk=component.pk), source=FANCY_BUTTON_SOURCE)

    with pytest.raises(Conflict):
        services.component_rate(component=component, user=UserFactory(), score=5)
    assert not Rating.objects.exists()


def test_rating_registers_component_rated_and_stores_the_score(committed, published_facts):
    component, user = PublishedComponentFactory(), UserFactory()

    with committed():
        rating = services.component_rate(component=component, user=user, score=4)

    assert Rating.objects.get() == rating
    assert (rating.score, rating.user_id, rating.component_id) == (4, user.pk, component.pk)
    assert published_facts() == [
        (
            ComponentRated,
            {"component_id": component.pk, "author_id": component.author_id, "user_id": user.pk, "score": 4},
        )
    ]


def test_second_rating_by_the_same_user_updates_the_first():
    component, user = PublishedComponentFactory(), UserFactory()
    first = services.component_rate(component=component, user=user, score=2)

    second = services.component_rate(component=component, user=user, score=5)

    assert second.pk == first.pk
    assert list(Rating.objects.values_list("score", flat=True)) == [5]
    stored = Component.objects.get(pk=component.pk)
    assert (stored.rating_average, stored.rating_count) == (Decimal("5.00"), 1)


def test_rating_keeps_average_and_count_exact():
    component = PublishedComponentFactory()
    users = UserFactory.create_batch(3)

    for user, score in zip(users, [5, 4, 4], strict=True):
        services.component_rate(component=component, user=user, score=score)
    stored = Component.objects.get(pk=component.pk)
    assert (stored.rating_average, stored.rating_count) == (Decimal("4.33"), 3)

    services.component_rate(component=component, user=users[0], score=1)
    stored = Component.objects.get(pk=component.pk)
    assert (stored.rating_average, stored.rating_count) == (Decimal("3.00"), 3)


def test_rating_average_counts_only_this_components_ratings():
    component, other = PublishedComponentFactory(), PublishedComponentFactory()
    services.component_rate(component=other, user=UserFactory(), score=1)

    services.component_rate(component=component, user=UserFactory(), score=5)

    assert Component.objects.get(pk=component.pk).rating_average == Decimal("5.00")
    assert Component.objects.get(pk=other.pk).rating_average == Decimal("1.00")


# --- author_reputation_recalculate ----------------------------------------------------------


def _rate(component, *scores):
    for score in scores:
        services.component_rate(component=component, user=UserFactory(), score=score)


def test_reputation_is_the_average_over_ratings_of_published_components():
    author = AuthorFactory()
    first, second = PublishedComponentFactory.create_batch(2, author=author)
    _rate(first, 5, 4)
    _rate(second, 3)
    ComponentFactory(author=author, status=Component.Status.REJECTED, rating_average=Decimal("1.00"), rating_count=9)
    _rate(PublishedComponentFactory(), 1)  # someone else's

    reputation = services.author_reputation_recalculate(author_id=author.pk)

    assert reputation == Decimal("4.00")
    assert Author.objects.get(pk=author.pk).reputation == Decimal("4.00")


def test_reputation_is_zero_when_author_has_no_ratings():
    author = AuthorFactory(reputation=Decimal("3.50"))
    PublishedComponentFactory(author=author)

    assert services.author_reputation_recalculate(author_id=author.pk) == Decimal(0)
    assert Author.objects.get(pk=author.pk).reputation == Decimal(0)


def test_reputation_is_exact_when_averages_of_components_were_rounded():
    author = AuthorFactory()
    one, six = PublishedComponentFactory.create_batch(2, author=author)
    _rate(one, 1)
    _rate(six, 5, 5, 5, 5, 4, 4)  # 28/6 = 4.666..., stored as 4.67

    assert services.author_reputation_recalculate(author_id=author.pk) == Decimal("4.14")  # 29/7


# --- authors rating their own components ----------------------------------------------------


@pytest.mark.parametrize("status", list(Component.Status))
def test_rating_is_refused_when_the_author_rates_their_own_component(null_broker, committed, status):
    component = PublishedComponentFactory(status=status)

    with committed(), pytest.raises(PermissionDenied) as info:
        services.component_rate(component=component, user=component.author.user, score=5)

    assert info.value.message == "Authors cannot rate their own components."
    assert not Rating.objects.exists()
    assert Component.objects.get(pk=component.pk).rating_count == 0
    assert null_broker.published == []


def test_self_ratings_stored_before_the_refusal_count_in_neither_average_nor_reputation():
    component = PublishedComponentFactory()
    Rating.objects.create(component=component, user=component.author.user, score=5)  # an old self-rating

    services.component_rate(component=component, user=UserFactory(), score=2)

    stored = Component.objects.get(pk=component.pk)
    assert (stored.rating_average, stored.rating_count) == (Decimal("2.00"), 1)
    assert services.author_reputation_recalculate(author_id=component.author_id) == Decimal("2.00")
