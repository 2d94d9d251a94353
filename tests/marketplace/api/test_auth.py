"""API tokens (Bearer, hashed, expiry, revocation, last use) and the per-token write rate limit."""

from __future__ import annotations

import time
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.utils import timezone

from marketplace.api.auth import client_address
from marketplace.models import ApiToken, Component
from tests.config.test_production_settings import production_env, run_manage
from tests.marketplace.factories import PublishedComponentFactory, UserFactory, issue_key
from tests.support.api import API, bearer

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("api_rate_limit_cache")]

SOURCE = "---\nname: x\nversion: 1.0.0\ndescription: d\n---\n"


@pytest.fixture
def user():
    return UserFactory(username="carol")


def upload(client, key: str, name: str = "Thing"):
    return client.post(
        f"{API}/components", {"name": name, "source": SOURCE}, content_type="application/json", headers=bearer(key)
    )


def test_a_valid_token_authenticates_its_user(client, user):
    response = upload(client, issue_key(user))

    assert response.status_code == 201
    assert Component.objects.get().author.user == user


@pytest.mark.parametrize(
    "header",
    ["Bearer", "Bearer ", "Bearer not-a-key", "Token abc", "abc", "Basic dXNlcjpwdw==", "Bearer a\tb"],
)
def test_request_is_401_when_the_authorization_header_is_not_a_valid_bearer_key(client, header):
    response = client.get(f"{API}/me/components", headers={"Authorization": header})

    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"


def test_token_is_refused_when_expired(client, user):
    key = issue_key(user)
    ApiToken.objects.update(expires_at=timezone.now() - timedelta(seconds=1))

    assert client.get(f"{API}/me/components", headers=bearer(key)).status_code == 401


def test_token_is_refused_when_revoked(client, user):
    key = issue_key(user)
    ApiToken.objects.update(revoked_at=timezone.now())

    assert client.get(f"{API}/me/components", headers=bearer(key)).status_code == 401


def test_token_is_refused_when_its_user_is_inactive(client, user):
    key = issue_key(user)
    user.is_active = False
    user.save()

    assert client.get(f"{API}/me/components", headers=bearer(key)).status_code == 401


def test_a_bad_token_is_401_even_where_anonymous_access_is_allowed(client):
    assert client.get(f"{API}/components", headers=bearer("wrong")).status_code == 401
    assert client.get(f"{API}/components").status_code == 200


def test_only_the_hash_of_the_key_is_stored(user):
    key = issue_key(user)

    token = ApiToken.objects.get()
    assert token.key_hash == ApiToken.hash_key(key)
    assert key not in {token.key_hash, token.key_prefix, token.name}


def test_last_used_at_is_written_on_first_use_then_at_most_once_a_minute(client, user):
    key = issue_key(user)
    assert ApiToken.objects.get().last_used_at is None

    client.get(f"{API}/me/components", headers=bearer(key))
    first = ApiToken.objects.get().last_used_at
    client.get(f"{API}/me/components", headers=bearer(key))
    assert first is not None and ApiToken.objects.get().last_used_at == first

    ApiToken.objects.update(last_used_at=timezone.now() - timedelta(minutes=2))
    client.get(f"{API}/me/components", headers=bearer(key))
    assert ApiToken.objects.get().last_used_at > first


# --- rate limit ------------------------------------------------------------------------------


@pytest.fixture
def one_rate_window(monkeypatch):
    """The limiter's clock stands still, so a test's requests all fall in one counting window
    (a real window could end between two requests and reset the count)."""
    now = time.time()
    monkeypatch.setattr("django_ratelimit.core.time", SimpleNamespace(time=lambda: now))


def test_writes_over_the_limit_are_429_with_retry_after_and_write_nothing(client, user, settings, one_rate_window):
    settings.API_WRITE_RATE_LIMIT = "2/m"
    key = issue_key(user)

    statuses = [upload(client, key, name=f"Thing {n}").status_code for n in range(2)]
    limited = upload(client, key, name="One too many")

    assert statuses == [201, 201]
    assert limited.status_code == 429
    assert limited.json()["code"] == "rate_limited"
    assert 1 <= int(limited["Retry-After"]) <= 60
    assert Component.objects.count() == 2


def test_rate_limit_counts_each_token_separately(client, user, settings, one_rate_window):
    settings.API_WRITE_RATE_LIMIT = "1/m"
    first, second = issue_key(user), issue_key(UserFactory())

    assert upload(client, first, "A").status_code == 201
    assert upload(client, first, "B").status_code == 429
    assert upload(client, second, "C").status_code == 201


def test_reads_are_not_rate_limited(client, user, settings, one_rate_window):
    settings.API_WRITE_RATE_LIMIT = "1/m"
    key = issue_key(user)

    assert [client.get(f"{API}/me/components", headers=bearer(key)).status_code for _ in range(3)] == [200] * 3


def test_anonymous_downloads_are_rate_limited_per_client_address(client, settings, one_rate_window):
    settings.API_WRITE_RATE_LIMIT = "1/m"
    component = PublishedComponentFactory()
    url = f"{API}/components/{component.slug}/download"

    assert client.post(url, REMOTE_ADDR="10.0.0.1").status_code == 200
    assert client.post(url, REMOTE_ADDR="10.0.0.1").status_code == 429
    assert client.post(url, REMOTE_ADDR="10.0.0.2").status_code == 200


def test_writes_go_through_when_the_rate_limit_redis_is_unreachable(client, user, settings, one_rate_window, caplog):
    settings.API_WRITE_RATE_LIMIT = "1/m"
    settings.CACHES = {
        **settings.CACHES,
        "ratelimit": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            # Port 1 on loopback: nothing listens, the connection is refused at once.
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        },
    }
    key = issue_key(user)

    assert [upload(client, key, f"T{n}").status_code for n in range(2)] == [201, 201]
    assert "rate limit cache unreachable" in caplog.text


def test_anonymous_downloads_behind_two_proxies_are_counted_per_the_address_the_outer_proxy_saw(
    client, settings, one_rate_window
):
    settings.API_WRITE_RATE_LIMIT = "1/m"
    settings.API_TRUSTED_PROXY_HOPS = 2
    url = f"{API}/components/{PublishedComponentFactory().slug}/download"

    def download(forwarded_for: str) -> int:
        return client.post(url, REMOTE_ADDR="10.9.9.9", HTTP_X_FORWARDED_FOR=forwarded_for).status_code

    # The outer proxy appends the client's address, the inner one the outer proxy's.
    assert download("203.0.113.5, 10.0.0.2") == 200
    # Forged entries before them do not make a new client.
    assert download("198.51.100.1, 203.0.113.5, 10.0.0.2") == 429
    assert download("198.51.100.2, 203.0.113.5, 10.0.0.2") == 429
    assert download("203.0.113.6, 10.0.0.2") == 200
    # Too few entries or an unusable one: the connection's address (the inner proxy's) counts.
    assert [download("not an address, 10.0.0.2"), download("10.0.0.2"), download("")] == [200, 429, 429]


def request_from(remote_addr: str, forwarded_for: str | None) -> SimpleNamespace:
    meta = {"REMOTE_ADDR": remote_addr}
    if forwarded_for is not None:
        meta["HTTP_X_FORWARDED_FOR"] = forwarded_for
    return SimpleNamespace(META=meta)


@pytest.mark.parametrize(
    ("hops", "forwarded_for", "expected"),
    [
        (0, "198.51.100.1", "10.9.9.9"),  # no proxy trusted: the header is the client's own words
        (1, "198.51.100.1, 203.0.113.5", "203.0.113.5"),
        (1, " 2001:db8::1 ", "2001:db8::1"),
        (2, "198.51.100.1, 203.0.113.5, 10.0.0.2", "203.0.113.5"),
        (2, "203.0.113.5", "10.9.9.9"),  # fewer entries than hops: it did not come through the chain
        (1, "203.0.113.5, junk", "10.9.9.9"),
        (1, None, "10.9.9.9"),
    ],
)
def test_client_address_trusts_exactly_the_configured_number_of_proxy_hops(settings, hops, forwarded_for, expected):
    settings.API_TRUSTED_PROXY_HOPS = hops
    assert client_address(request_from("10.9.9.9", forwarded_for)) == expected


def test_production_settings_trust_no_forwarded_header_unless_told_how_many_proxies_there_are():
    script = (
        "from types import SimpleNamespace\n"
        "from marketplace.api.auth import client_address\n"
        "meta = {'REMOTE_ADDR': '10.9.9.9', 'HTTP_X_FORWARDED_FOR': '198.51.100.7'}\n"
        "print(client_address(SimpleNamespace(META=meta)))\n"
    )
    result = run_manage("shell", "--verbosity", "0", "-c", script, **production_env())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "10.9.9.9"

    result = run_manage("shell", "--verbosity", "0", "-c", script, **production_env(API_TRUSTED_PROXY_HOPS="1"))
    assert result.stdout.strip() == "198.51.100.7", result.stderr
