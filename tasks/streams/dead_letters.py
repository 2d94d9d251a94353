"""Dead-lettered stream entries: list them, and hand one back to its group so it tries again.

The consumer library moves an entry it gave up on to ``<stream>:dead:<group>`` with the entry's
fields plus ``error``, ``entry_id``, ``deliveries``, ``consumer`` and ``dead_at``, and acks it in
the source stream. Re-appending ``XADD``s the original fields (those five removed) to the group's
retry stream (``<stream>:retry:<group>``), which that group's consumers read beside the stream:
the other groups never see it, and the relay's stream, whose explicit increasing ids take entries
from the relay alone (anything else would stop it with ``StreamConflict``), is not touched. The
group handles it again: its consumers dedupe by ``message_id`` only over what they *handled*
(the seen store is written with the ack of a handler that returned), and a dead-lettered entry
never got there.

Re-appending is one Lua script (read the dead entry, ``XDEL`` it, ``XADD`` the original), so two
operators pressing the button at once produce one new entry: the second finds nothing to move.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
from django.conf import settings

from tasks.streams.consumer import retry_stream_name
from tasks.streams.stats import redis_streams

# Fields the consumer library adds when it dead-letters an entry; the rest is the original entry.
DEAD_LETTER_FIELDS = ("error", "entry_id", "deliveries", "consumer", "dead_at")
DEAD_SUFFIX = ":dead:"

_REAPPEND = """
local rows = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #rows == 0 then return false end
local drop = {}
for i = 3, #ARGV do drop[ARGV[i]] = true end
local fields = {}
local raw = rows[1][2]
for i = 1, #raw, 2 do
  if not drop[raw[i]] then
    fields[#fields + 1] = raw[i]
    fields[#fields + 1] = raw[i + 1]
  end
end
if #fields == 0 then return redis.error_reply('dead letter has no original fields') end
redis.call('XDEL', KEYS[1], ARGV[1])
return redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(fields))
"""


@dataclass(frozen=True)
class StreamDeadLetter:
    """One entry of a dead-letter stream, as an operator reads it."""

    stream: str
    group: str
    dead_id: str
    message_id: str
    type: str
    key: str
    error: str
    deliveries: int | None
    dead_at: str
    entry_id: str


def _text(value: object) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _client() -> redis.Redis:
    return redis.Redis.from_url(settings.STREAMS_REDIS_URL, socket_timeout=3, socket_connect_timeout=3)


def dead_letter_stream_name(*, stream: str, group: str) -> str:
    """The dead-letter stream of ``group`` on ``stream``, as the consumer library names it."""
    return f"{stream}{DEAD_SUFFIX}{group}"


def _dead_letter(stream: str, group: str, dead_id: object, raw: object) -> StreamDeadLetter:
    fields = {_text(k): _text(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
    deliveries = fields.get("deliveries", "")
    return StreamDeadLetter(
        stream=stream,
        group=group,
        dead_id=_text(dead_id),
        message_id=fields.get("message_id", ""),
        type=fields.get("type", ""),
        key=fields.get("key", ""),
        error=fields.get("error", ""),
        deliveries=int(deliveries) if deliveries.isdigit() else None,
        dead_at=fields.get("dead_at", ""),
        entry_id=fields.get("entry_id", ""),
    )


def stream_dead_letters(*, client: redis.Redis | None = None, limit: int = 200) -> list[StreamDeadLetter]:
    """The newest ``limit`` dead letters of each group of each Redis stream the relay appends to.

    Groups are found by their dead-letter streams (``SCAN``), so a deleted group's dead letters
    still show. A key of another type under that name is skipped.
    """
    client = client or _client()
    found: list[StreamDeadLetter] = []
    for stream in redis_streams():
        prefix = f"{stream}{DEAD_SUFFIX}"
        names = sorted(_text(name) for name in client.scan_iter(match=f"{prefix}*", count=500, _type="stream"))
        for name in names:
            group = name[len(prefix) :]
            for dead_id, raw in client.xrevrange(name, count=limit):
                found.append(_dead_letter(stream, group, dead_id, raw))
    return found


def stream_dead_letter_reappend(
    *, stream: str, group: str, dead_id: str, client: redis.Redis | None = None
) -> str | None:
    """Move one dead letter to its group's retry stream as a new entry; return its id, or None
    when the dead letter is gone (re-appended or trimmed meanwhile). Only streams the relay appends to
    Redis are accepted (``ValueError`` otherwise), so a forged form cannot write elsewhere."""
    if stream not in redis_streams():
        raise ValueError(f"{stream!r} is not a Redis stream of this platform")
    client = client or _client()
    new_id = client.eval(
        _REAPPEND,
        2,
        dead_letter_stream_name(stream=stream, group=group),
        retry_stream_name(stream=stream, group=group),
        dead_id,
        settings.STREAMS_REDIS_MAXLEN,
        *DEAD_LETTER_FIELDS,
    )
    return _text(new_id) if new_id is not None else None
