# mypy: disable-error-code="no-untyped-call"
"""The buffered frame reader against a real RabbitMQ: heartbeats and a burst of frames."""

from __future__ import annotations

import contextlib
import time
import uuid

import pytest
from kombu.entity import Queue
from kombu.message import Message
from kombu.messaging import Consumer, Producer

from adapters.amqp.buffered import BufferedTCPTransport
from adapters.amqp.connection import make_connection
from hub.settings import AmqpSettings

pytestmark = pytest.mark.rabbitmq


def test_heartbeats_keep_an_idle_buffered_connection_alive(amqp_url: str) -> None:
    connection = make_connection(AmqpSettings(url=amqp_url, heartbeat=1))
    with connection:
        connection.connect()
        amqp_connection = connection.connection
        assert isinstance(amqp_connection.transport, BufferedTCPTransport)
        received = amqp_connection.bytes_recv
        until = time.monotonic() + 3.5  # > 2 heartbeat intervals without any traffic
        while time.monotonic() < until:
            with contextlib.suppress(TimeoutError):
                connection.drain_events(timeout=0.2)
            connection.heartbeat_check()  # raises ConnectionForced if beats were missed
        assert amqp_connection.bytes_recv > received  # the broker's heartbeat frames
        assert amqp_connection.connected


def test_a_burst_of_deliveries_is_read_whole_from_the_buffer(amqp_url: str) -> None:
    queue = Queue(f"amihub-test-buffered-{uuid.uuid4().hex}", durable=False)
    bodies = [bytes([65 + i % 26]) * (12_000 + i) for i in range(500)]
    connection = make_connection(AmqpSettings(url=amqp_url))
    with connection:
        channel = connection.channel()
        queue(channel).declare()
        producer = Producer(channel)
        for body in bodies:
            producer.publish(body, routing_key=queue.name, content_type="application/octet-stream")
        got: list[Message] = []
        consumer = Consumer(channel, queues=[queue], on_message=got.append, auto_declare=False)
        channel.basic_qos(0, 1000, False)
        consumer.consume()
        deadline = time.monotonic() + 20
        while len(got) < len(bodies) and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                connection.drain_events(timeout=0.5)
        assert [m.body for m in got] == bodies
        got[-1].ack(multiple=True)
        consumer.cancel()
        queue(channel).delete()
        channel.close()
