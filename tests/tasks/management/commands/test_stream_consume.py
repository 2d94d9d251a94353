"""``manage.py stream_consume``: the operator's handler path is checked before anything connects."""

import pytest
from django.core.management import CommandError, call_command


def test_a_handler_path_that_does_not_import_is_refused_before_consuming():
    with pytest.raises(CommandError, match="cannot import handler"):
        call_command("stream_consume", "--stream", "tests.items", "--group", "g", "--handler", "no.such.handler")
