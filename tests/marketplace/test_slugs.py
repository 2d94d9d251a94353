"""Slugs of new components: the name's slug, then numbered, in one query whatever the history."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from marketplace import services
from marketplace.models import Component
from marketplace.slugs import component_slug_next
from tests.marketplace.factories import FANCY_BUTTON_SOURCE, AuthorFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("null_broker")]


def _taken(*slugs: str) -> None:
    author = AuthorFactory()
    Component.objects.bulk_create(Component(author=author, name=slug[:200], slug=slug, source="x") for slug in slugs)


def _upload(name: str) -> Component:
    return services.component_upload(author=AuthorFactory(), name=name, source=FANCY_BUTTON_SOURCE)


def test_choosing_a_slug_is_one_query_when_3000_components_share_the_name(django_assert_num_queries):
    _taken("component", *(f"component-{n}" for n in range(2, 3001)))

    with django_assert_num_queries(1):
        slug = component_slug_next(name="!!!")

    assert slug == "component-3001"


def test_an_upload_costs_as_many_queries_with_3000_namesakes_as_with_none(django_assert_num_queries):
    author = AuthorFactory()
    with CaptureQueriesContext(connection) as first:
        services.component_upload(author=author, name="Component", source=FANCY_BUTTON_SOURCE)
    _taken(*(f"component-{n}" for n in range(2, 3001)))

    with django_assert_num_queries(len(first.captured_queries)):
        component = services.component_upload(author=author, name="Component", source=FANCY_BUTTON_SOURCE)

    assert component.slug == "component-3001"


def test_the_next_number_follows_the_highest_not_the_count():
    _taken("fancy-button", "fancy-button-2", "fancy-button-10", "fancy-button-9")

    assert _upload("Fancy Button").slug == "fancy-button-11"


def test_slugs_that_only_start_like_the_name_do_not_count():
    _taken("fancy-button", "fancy-button-kit", "fancy-button-2-beta", "fancy-buttons-7")

    assert _upload("Fancy Button").slug == "fancy-button-2"


def test_the_bare_slug_is_used_when_free_even_if_numbered_ones_exist():
    _taken("fancy-button-2")

    assert _upload("Fancy Button").slug == "fancy-button"


def test_a_slug_whose_number_would_outgrow_the_column_gets_a_random_suffix():
    _taken("x", "x-" + "9" * 218)  # 220 characters, the column's length; the next number has 221

    slug = _upload("x").slug

    assert slug.startswith("x-") and len(slug) == len("x-") + 6, slug
    assert Component.objects.filter(slug=slug).count() == 1
