import contextlib

from kombu import Connection

from tasks.messaging.redis_transport import QoS, Transport


def test_redis_urls_use_the_platform_transport_and_amqp_urls_do_not():
    assert isinstance(Connection("redis://127.0.0.1:6379/15").transport, Transport)
    assert not isinstance(Connection("amqp://guest:guest@127.0.0.1:5672//").transport, Transport)


class _ReleasedChannel:
    """What kombu's channel looks like once Celery released its connection."""

    @contextlib.contextmanager
    def conn_or_acquire(self, client=None):
        raise AttributeError("'NoneType' object has no attribute 'hostname'")
        yield  # pragma: no cover


def _qos_on_a_released_channel(*tags: str) -> QoS:
    qos = QoS.__new__(QoS)
    qos.channel = _ReleasedChannel()
    qos._delivered = {tag: object() for tag in tags}
    return qos


def test_restoring_unacked_messages_on_a_released_connection_gives_up_instead_of_crashing():
    qos = _qos_on_a_released_channel("tag-1", "tag-2")
    assert qos.restore_unacked() == []
    assert qos._delivered == {}


def test_acking_after_the_connection_was_released_leaves_the_message_for_the_visibility_timeout():
    # A task that finished after Redis went away is acked in the next connection's event loop.
    qos = _qos_on_a_released_channel("tag-1", "tag-2")
    qos.ack("tag-1")
    assert list(qos._delivered) == ["tag-2"]


def test_rejecting_after_the_connection_was_released_leaves_the_message_for_the_visibility_timeout():
    qos = _qos_on_a_released_channel("tag-1")
    qos.reject("tag-1", requeue=True)
    qos.reject("tag-2", requeue=False)
    assert qos._delivered == {}
