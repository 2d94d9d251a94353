"""Event streams for other services: committed events of streamed classes, in commit order per key.

- ``sequencing``: the relay gives each committed event of a class with ``Message.stream`` its
  place in its stream (StreamEntry rows), reading the outbox behind a cursor.
- ``appends``: the relay's streams pass; hands entries to their sink in order, once.
- ``sinks``: one interface, a Redis Streams sink and a RabbitMQ sink, chosen per stream by setting.
- ``entries`` and ``consumer``: the wire form and a consumer library with no Django import, for
  services that consume the streams (``manage.py stream_consume`` runs it here).

Builds on ``tasks.messaging`` (the outbox, DispatchError); nothing in messaging knows of it.
"""
