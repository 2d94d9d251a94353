"""The admin page of dead-lettered stream entries, with the action that re-appends a selection.

Listing needs the monitoring permission, re-appending ``tasks.change_deadletter`` (what
requeues a task's dead letter does too); the admin site checks the first, this view the second.
Every re-append is written to the admin log (``LogEntry``, no object: the entry lives in Redis)
with who did it, the dead letter and the new entry's id.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import redis
from django.contrib import messages
from django.contrib.admin.models import CHANGE, LogEntry
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse

from tasks.streams.dead_letters import stream_dead_letter_reappend, stream_dead_letters

logger = logging.getLogger(__name__)

REAPPEND_PERMISSION = "tasks.change_deadletter"


def _selection(value: str) -> tuple[str, str, str] | None:
    """A checkbox value (JSON ``[stream, group, dead_id]``) back, or None when it is not one."""
    try:
        parts = json.loads(value)
    except ValueError:
        return None
    if isinstance(parts, list) and len(parts) == 3 and all(isinstance(p, str) for p in parts):
        return parts[0], parts[1], parts[2]
    return None


def _reappend_selected(request: HttpRequest, selected: list[str]) -> None:
    moved = gone = 0
    for value in selected:
        selection = _selection(value)
        if selection is None:
            messages.error(request, "A selection was not understood and was skipped.")
            continue
        stream, group, dead_id = selection
        try:
            new_id = stream_dead_letter_reappend(stream=stream, group=group, dead_id=dead_id)
        except (ValueError, redis.ResponseError) as exc:
            messages.error(request, f"Not re-appended {stream} / {group} / {dead_id}: {exc}")
            continue
        if new_id is None:
            gone += 1
            continue
        moved += 1
        text = f"Handed dead letter {dead_id} back to group {group} of stream {stream} (retry entry {new_id})."
        LogEntry.objects.create(
            user_id=request.user.pk, action_flag=CHANGE, object_repr=f"{stream}:dead:{group} {dead_id}"[:200],
            change_message=text,
        )  # fmt: skip
        logger.info("%s (by %s)", text, request.user.get_username())
    if moved:
        messages.success(request, f"Handed {moved} dead letter(s) back to their groups.")
    if gone:
        messages.warning(request, f"{gone} skipped: re-appended by someone else meanwhile, or trimmed.")


def stream_dead_letters_view(request: HttpRequest, *, site: Any) -> HttpResponse:
    """GET: the dead letters of every Redis stream; POST: re-append the selected ones."""
    can_reappend = request.user.has_perm(REAPPEND_PERMISSION)
    if request.method == "POST":
        if not can_reappend:
            raise PermissionDenied(f"Re-appending needs the {REAPPEND_PERMISSION} permission.")
        try:
            _reappend_selected(request, request.POST.getlist("selected"))
        except redis.RedisError as exc:
            messages.error(request, f"Redis did not answer; try again: {exc}")
        return HttpResponseRedirect(reverse(f"{site.name}:stream_dead_letters"))
    error = None
    try:
        dead_letters = stream_dead_letters()
    except redis.RedisError as exc:
        dead_letters, error = [], str(exc)
    rows = [(json.dumps([d.stream, d.group, d.dead_id]), d) for d in dead_letters]
    context = {
        **site.each_context(request),
        "title": "Stream dead letters",
        "rows": rows,
        "error": error,
        "can_reappend": can_reappend,
    }
    return TemplateResponse(request, "tasks/admin/stream_dead_letters.html", context)
