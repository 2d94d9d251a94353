"""Flower's configuration: ``celery -A config flower --conf=config/flowerconfig.py`` (the Procfile).

Flower executes this file after reading its ``FLOWER_*`` environment variables and command
line, so ``flower_options`` below already holds them. Only names that are Flower options are
read back from here (``persistent``, ``db``, ...); the rest is ignored by Flower.

Flower refuses to start without credentials: Flower can revoke and terminate tasks, and its
dashboard shows task arguments, so it is never served open. ``make run`` generates dev
credentials; production must set ``FLOWER_BASIC_AUTH=user:password`` (or Flower's OAuth
options, ``FLOWER_AUTH`` + ``FLOWER_AUTH_PROVIDER``).
"""

import os

from django.conf import settings
from tornado.options import options as flower_options

if os.environ.get("FLOWER_UNAUTHENTICATED_API"):
    raise SystemExit(
        "Flower: FLOWER_UNAUTHENTICATED_API is set; its API must stay behind the same authentication. Unset it."
    )
if not (flower_options.basic_auth or (flower_options.auth and flower_options.auth_provider)):
    raise SystemExit(
        "Flower: refusing to start without authentication. Set FLOWER_BASIC_AUTH=user:password "
        "(make run generates one), or FLOWER_AUTH and FLOWER_AUTH_PROVIDER for OAuth."
    )

# Tasks and workers survive a Flower restart: state in VAR_DIR, saved every minute and on exit.
# The state is a shelve, that is a pickle: whoever can write the file runs code as Flower when
# it loads it. Flower's files are therefore created owner-only (this process's umask), and the
# file must never come from anywhere else (README "Security model").
os.umask(0o077)
persistent = True
db = os.environ.get("FLOWER_DB", str(settings.VAR_DIR / "flower.db"))
state_save_interval = 60_000
# Bounded memory: at most this many tasks kept (oldest dropped); workers gone for 5 min purged.
max_tasks = int(os.environ.get("FLOWER_MAX_TASKS", "10000"))
purge_offline_workers = int(os.environ.get("FLOWER_PURGE_OFFLINE_WORKERS", "300"))
