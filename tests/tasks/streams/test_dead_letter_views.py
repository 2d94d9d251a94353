"""The stream dead letters admin page: listed for readers, re-appended by those allowed, logged."""

from __future__ import annotations

import json

from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from django.urls import reverse

from tests.support.streams import STREAM, fields

URL = "admin:stream_dead_letters"


def dead(redis_client, message_id: str = "m-1") -> str:
    return redis_client.xadd(f"{STREAM}:dead:search", {**fields(message_id=message_id), "error": "boom"}).decode()


def test_the_page_lists_dead_letters_and_a_re_append_is_logged_with_who_did_it(admin_client_logged_in, redis_client):
    dead_id = dead(redis_client)
    page = admin_client_logged_in.get(reverse(URL))
    assert page.status_code == 200 and b"m-1" in page.content and b"boom" in page.content

    value = json.dumps([STREAM, "search", dead_id])
    for _ in range(2):  # a double click
        admin_client_logged_in.post(reverse(URL), {"selected": [value]})

    assert redis_client.xlen(f"{STREAM}:retry:search") == 1 and redis_client.xlen(f"{STREAM}:dead:search") == 0
    [entry] = LogEntry.objects.all()
    assert entry.user.username == "root" and dead_id in entry.change_message


def test_readers_without_the_change_permission_cannot_re_append(client, django_user_model, redis_client):
    reader = django_user_model.objects.create_user("reader", is_staff=True)
    reader.user_permissions.add(Permission.objects.get(codename="view_deadletter"))
    client.force_login(reader)
    dead_id = dead(redis_client)

    assert client.get(reverse(URL)).status_code == 200
    assert client.post(reverse(URL), {"selected": [json.dumps([STREAM, "search", dead_id])]}).status_code == 403
    assert redis_client.xlen(f"{STREAM}:retry:search") == 0


def test_staff_without_the_monitoring_permission_see_nothing(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("staff", is_staff=True))
    assert client.get(reverse(URL)).status_code == 403
