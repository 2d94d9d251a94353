import re
from datetime import timedelta

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.urls import reverse
from django.utils import timezone

from marketplace.models import ApiToken, Rating
from tests.marketplace.factories import ComponentFactory, RatingFactory, UserFactory, issue_key

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


TOKEN_ADD = reverse("admin:marketplace_apitoken_add")


def token_form(*, user=None, days: int = 30, **fields) -> dict:
    expires = timezone.localtime() + timedelta(days=days)
    data = {"name": "ci", "expires_at_0": expires.strftime("%Y-%m-%d"), "expires_at_1": expires.strftime("%H:%M:%S")}
    if user is not None:
        data["user"] = user.pk
    return {**data, **fields}


@pytest.fixture
def token_staff(client, django_user_model):
    """Log in a staff user with the ApiToken permissions ``codenames``; return (client, user)."""

    def login(*codenames: str):
        user = django_user_model.objects.create_user("tokenstaff", is_staff=True)
        user.user_permissions.set(
            Permission.objects.filter(content_type__app_label="marketplace", codename__in=codenames)
        )
        client.force_login(user)
        return client, user

    return login


def issued_key(response) -> str:
    match = re.search(r'<code id="api-key">([^<]+)</code>', response.content.decode())
    assert match, response.content[:2000]
    return match.group(1)


def test_admin_issues_a_token_and_shows_its_key_once_on_a_page_not_in_a_cookie(admin_client_logged_in):
    user = UserFactory()
    response = admin_client_logged_in.post(TOKEN_ADD, token_form(user=user))

    assert response.status_code == 200
    key = issued_key(response)
    assert ApiToken.hash_key(key) == ApiToken.objects.get(user=user).key_hash
    assert "no-store" in response["Cache-Control"]
    assert not any(key in morsel.value for morsel in response.cookies.values())
    assert not [str(m) for m in get_messages(response.wsgi_request) if key in str(m)]
    assert key not in admin_client_logged_in.get(reverse("admin:marketplace_apitoken_changelist")).content.decode()


def test_a_staff_user_with_add_permission_issues_tokens_for_himself_only(token_staff):
    client, staff = token_staff("add_apitoken", "view_apitoken")
    root = UserFactory(username="boss", is_superuser=True, is_staff=True)

    response = client.post(TOKEN_ADD, token_form(user=root))

    assert response.status_code == 200
    assert set(ApiToken.objects.values_list("user", flat=True)) == {staff.pk}
    assert 'name="user"' not in client.get(TOKEN_ADD).content.decode()


def test_the_issue_for_others_permission_allows_other_users_but_not_a_superuser(token_staff):
    client, _ = token_staff("add_apitoken", "view_apitoken", "issue_token_for_others")
    other, root = UserFactory(), UserFactory(username="boss", is_superuser=True)

    assert client.post(TOKEN_ADD, token_form(user=other)).status_code == 200
    response = client.post(TOKEN_ADD, token_form(user=root))

    assert "superuser" in str(response.context["adminform"].form.errors)
    assert list(ApiToken.objects.values_list("user", flat=True)) == [other.pk]


def test_the_admin_refuses_an_expiry_beyond_api_token_max_days(admin_client_logged_in, settings):
    settings.API_TOKEN_MAX_DAYS = 90
    response = admin_client_logged_in.post(TOKEN_ADD, token_form(user=UserFactory(), days=3650))

    assert response.status_code == 200
    assert "90 days" in str(response.context["adminform"].form.errors)
    assert not ApiToken.objects.exists()


def test_revocation_in_the_admin_is_one_way(admin_client_logged_in):
    user = UserFactory()
    issue_key(user)
    token = ApiToken.objects.get()
    change = reverse("admin:marketplace_apitoken_change", args=[token.pk])

    admin_client_logged_in.post(change, {**token_form(), "revoke": "on"})
    token.refresh_from_db()
    assert token.revoked_at is not None

    page = admin_client_logged_in.get(change).content.decode()
    assert 'name="revoke"' not in page and 'name="revoked_at' not in page
    admin_client_logged_in.post(change, {**token_form(), "revoked_at_0": "", "revoked_at_1": ""})
    assert ApiToken.objects.get().revoked_at == token.revoked_at


def test_the_revoke_action_revokes_the_selected_tokens(admin_client_logged_in):
    issue_key(UserFactory())
    token = ApiToken.objects.get()

    admin_client_logged_in.post(
        reverse("admin:marketplace_apitoken_changelist"), {"action": "revoke_tokens", "_selected_action": [token.pk]}
    )

    assert not ApiToken.objects.get().is_active


def test_admin_requires_login(client):
    response = client.get(reverse("admin:marketplace_component_changelist"))
    assert response.status_code == 302
    assert "/login/" in response["Location"]
