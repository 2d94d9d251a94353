"""The stream dead letters admin page: shown to monitoring readers, to no one else."""

from __future__ import annotations

from django.urls import reverse

from tests.support.streams import STREAM, fields

URL = "admin:stream_dead_letters"


def test_the_page_lists_dead_letters(admin_client_logged_in, redis_client):
    redis_client.xadd(f"{STREAM}:dead:search", {**fields(message_id="m-1"), "error": "boom <b>"})

    page = admin_client_logged_in.get(reverse(URL))

    assert page.status_code == 200
    assert b"m-1" in page.content and b"boom &lt;b&gt;" in page.content and b"search" in page.content


def test_staff_without_the_monitoring_permission_see_nothing(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("staff", is_staff=True))
    assert client.get(reverse(URL)).status_code == 403
