"""WSGI entry point for gunicorn: ``gunicorn config.wsgi``."""

import os

import django
from django.core.handlers.wsgi import WSGIHandler

from tasks.monitoring.tracing import tracing_configure

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup(set_prefix=False)
# Before the handler loads its middleware: the Django instrumentation adds its own (when OTEL_* ask for tracing).
tracing_configure(process="web")
application = WSGIHandler()
