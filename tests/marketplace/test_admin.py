import pytest
from django.contrib import admin
from django.urls import reverse

from marketplace.models import ApiToken, Rating
from tests.marketplace.factories import ComponentFactory, RatingFactory, UserFactory

pytestmark = pytest.mark.django_db


def _admin_urls():
    for model in admin.site._registry:
        info = (model._meta.app_label, model._meta.model_name)
        yield pytest.param(f"admin:{info[0]}_{info[1]}_changelist", id=f"{info[0]}.{info[1]}-list")
        yield pytest.param(f"admin:{info[0]}_{info[1]}_add", id=f"{info[0]}.{info[1]}-add")


@pytest.mark.parametrize("url_name", list(_admin_urls()))
def test_every_admin_page_renders_for_a_superuser(admin_client_logged_in, url_name):
    ComponentFactory()
    response = admin_client_logged_in.get(reverse(url_name))
    # Some apps (results, beat's clocked list) forbid adding by design: 403 is their answer.
    assert response.status_code in (200, 403), response.content[:500]


@pytest.mark.parametrize("score", [0, 6])
def test_admin_shows_form_error_when_rating_out_of_range(admin_client_logged_in, score):
    component, user = ComponentFactory(), UserFactory()
    response = admin_client_logged_in.post(
        reverse("admin:marketplace_rating_add"), {"component": component.pk, "user": user.pk, "score": score}
    )
    assert response.status_code == 200
    assert response.context["adminform"].form.errors
    assert Rating.objects.count() == 0


def test_admin_shows_form_error_when_user_rates_twice(admin_client_logged_in):
    rating = RatingFactory()
    response = admin_client_logged_in.post(
        reverse("admin:marketplace_rating_add"),
        {"component": rating.component.pk, "user": rating.user.pk, "score": 2},
    )
    assert response.status_code == 200
    assert "already" in str(response.context["adminform"].form.errors)
    assert Rating.objects.count() == 1


def test_admin_issues_a_token_and_shows_its_key_once(admin_client_logged_in):
    user = UserFactory()
    response = admin_client_logged_in.post(
        reverse("admin:marketplace_apitoken_add"),
        {"user": user.pk, "name": "ci", "expires_at_0": "2099-01-01", "expires_at_1": "00:00:00"},
        follow=True,
    )
    token = ApiToken.objects.get()
    shown = [str(m) for m in response.context["messages"] if "API key" in str(m)]
    assert len(shown) == 1
    key = shown[0].rsplit(" ", 1)[-1]
    assert ApiToken.hash_key(key) == token.key_hash


def test_admin_requires_login(client):
    response = client.get(reverse("admin:marketplace_component_changelist"))
    assert response.status_code == 302
    assert "/login/" in response["Location"]
