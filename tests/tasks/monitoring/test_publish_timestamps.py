import time

from tasks.monitoring.publish_timestamps import SENT_AT_HEADER, stamp_sent_at


def test_sent_at_is_set_when_a_task_is_published():
    headers = {"task": "tasks.ping"}
    before = time.time()
    stamp_sent_at(sender="tasks.ping", headers=headers)
    assert before <= headers[SENT_AT_HEADER] <= time.time()


def test_sent_at_is_renewed_when_a_retry_republishes_old_headers():
    headers = {SENT_AT_HEADER: 1.0}
    stamp_sent_at(sender="tasks.ping", headers=headers)
    assert headers[SENT_AT_HEADER] > 1.0
