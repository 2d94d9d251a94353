"""Loaded by workers with ``--include tests.support.unique_worker``: subscribes the unique and
debounced test handlers, as an app's ``ready()`` would."""

from tasks.bus import get_message_broker
from tests.support.unique_handlers import subscribe

subscribe(get_message_broker())
