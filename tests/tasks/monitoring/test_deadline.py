import threading

from tasks.monitoring.deadline import DeadlineExceeded, call_concurrently


def test_each_outcome_is_reported_when_calls_return_raise_or_hang():
    release = threading.Event()

    def hangs():
        release.wait(30)
        return "late"

    def raises():
        raise ValueError("broken")

    try:
        outcomes = call_concurrently({"ok": lambda: 42, "raises": raises, "hangs": hangs}, timeout=0.5)
    finally:
        release.set()

    assert outcomes["ok"].ok and outcomes["ok"].value == 42
    assert isinstance(outcomes["raises"].error, ValueError)
    assert isinstance(outcomes["hangs"].error, DeadlineExceeded)
    assert not outcomes["hangs"].ok


def test_nothing_runs_when_there_are_no_calls():
    assert call_concurrently({}, timeout=1) == {}
