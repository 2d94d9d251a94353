"""``LOG_FORMAT=json``: one JSON object per line, for log shippers (Loki, Elasticsearch, Datadog).

Built on python-json-logger, which handles the cases a hand-written ``json.dumps`` misses
(exceptions and stack traces, ``extra=`` fields, values JSON cannot encode). The context fields
``ContextFilter`` puts on each record (``task_id``, ``message_id``, ``handler``, ``trace_id``,
``span_id``) appear only where known: the ``-`` the text format prints for an unknown one would
be a lie in a field a query filters on.
"""

from __future__ import annotations

from typing import Any

from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

from tasks.reliability.log_context import FIELDS, UNKNOWN


class JsonFormatter(_JsonFormatter):
    """``time``, ``level``, ``logger``, ``message``, the known context fields and any ``extra=``."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("fmt", "%(asctime)s %(levelname)s %(name)s %(message)s")
        kwargs.setdefault("rename_fields", {"asctime": "time", "levelname": "level", "name": "logger"})
        super().__init__(**kwargs)

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        for name in FIELDS:
            if log_data.get(name) == UNKNOWN:
                del log_data[name]
        return super().process_log_record(log_data)
