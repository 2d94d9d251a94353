"""``LOG_FORMAT=json``: one JSON object per line with the context fields that are known."""

from __future__ import annotations

import io
import json
import logging

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from tasks.reliability.json_log_formatter import JsonFormatter
from tasks.reliability.log_context import ContextFilter, log_context
from tests.config.test_production_settings import run_manage


def json_lines(emit) -> list[dict]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    logger = logging.getLogger("tests.json_logs")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        emit(logger)
    finally:
        logger.removeHandler(handler)
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_record_in_a_task_carries_the_task_fields_and_the_spans_trace_ids():
    span = NonRecordingSpan(SpanContext(0xABC, 0xDEF, is_remote=False, trace_flags=TraceFlags(1)))

    def emit(logger):
        with trace.use_span(span), log_context(task_id="t-1", message_id="m-1", handler="h.run"):
            logger.warning("handled %s", "it", extra={"attempt": 2})

    [line] = json_lines(emit)

    assert line["message"] == "handled it"
    assert (line["level"], line["logger"], line["attempt"]) == ("WARNING", "tests.json_logs", 2)
    assert (line["task_id"], line["message_id"], line["handler"]) == ("t-1", "m-1", "h.run")
    assert line["trace_id"] == f"{0xABC:032x}" and line["span_id"] == f"{0xDEF:016x}"
    assert "time" in line


def test_fields_not_known_are_left_out_rather_than_written_as_a_dash():
    [line] = json_lines(lambda logger: logger.info("outside any task"))

    assert not {"task_id", "message_id", "handler", "trace_id", "span_id"} & line.keys()


def test_an_exception_stays_inside_its_one_line():
    def emit(logger):
        try:
            raise ValueError("bad\nvalue")
        except ValueError:
            logger.exception("failed")

    [line] = json_lines(emit)

    assert "ValueError: bad\nvalue" in line["exc_info"]


def test_log_format_json_makes_every_line_a_json_object_and_text_stays_the_default():
    script = "import logging; logging.getLogger('probe').warning('one'); logging.getLogger('probe').warning('two')"

    as_json = run_manage("shell", "-c", script, DEBUG="1", LOG_FORMAT="json")
    as_text = run_manage("shell", "-c", script, DEBUG="1")

    assert as_json.returncode == 0, as_json.stderr
    lines = [json.loads(line) for line in as_json.stderr.splitlines() if '"probe"' in line]
    assert [line["message"] for line in lines] == ["one", "two"]
    assert "WARNING probe one task_id=- message_id=- handler=-" in as_text.stderr


def test_an_unknown_log_format_is_refused_with_the_choices():
    result = run_manage("check", DEBUG="1", LOG_FORMAT="xml")

    assert result.returncode != 0
    assert "LOG_FORMAT must be text or json" in result.stderr
