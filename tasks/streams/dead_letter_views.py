"""The admin page of dead-lettered stream entries (read only: see ``tasks.streams.dead_letters``
for why they are not re-appended from here). The admin site checks the monitoring permission."""

from __future__ import annotations

from typing import Any

import redis
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from tasks.streams.dead_letters import stream_dead_letters


def stream_dead_letters_view(request: HttpRequest, *, site: Any) -> HttpResponse:
    """The dead letters of every Redis stream the relay appends to, newest first per group."""
    error = None
    try:
        dead_letters = stream_dead_letters()
    except redis.RedisError as exc:
        dead_letters, error = [], str(exc)
    context = {
        **site.each_context(request),
        "title": "Stream dead letters",
        "dead_letters": dead_letters,
        "error": error,
    }
    return TemplateResponse(request, "tasks/admin/stream_dead_letters.html", context)
