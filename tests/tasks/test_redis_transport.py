import contextlib

from kombu import Connection

from tasks.redis_transport import QoS, Transport


def test_redis_urls_use_the_platform_transport_and_amqp_urls_do_not():
    assert isinstance(Connection("redis://127.0.0.1:6379/15").transport, Transport)
    assert not isinstance(Connection("amqp://guest:guest@127.0.0.1:5672//").transport, Transport)


class _ReleasedChannel:
    """What kombu's channel looks like once Celery released its connection."""

    @contextlib.contextmanager
    def conn_or_acquire(self, client=None):
        raise AttributeError("'NoneType' object has no attribute 'hostname'")
        yield  # pragma: no cover


def test_restoring_unacked_messages_on_a_released_connection_gives_up_instead_of_crashing():
    qos = QoS.__new__(QoS)
    qos.channel = _ReleasedChannel()
    qos._delivered = {"tag-1": object(), "tag-2": object()}
    assert qos.restore_unacked() == []
    assert qos._delivered == {}
