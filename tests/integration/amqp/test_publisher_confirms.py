"""ConfirmingPublisher on RabbitMQ: confirms (multiple acks among them) settle every
publish of every batch, and only the unroutable mandatory ones come back failed."""

from __future__ import annotations

import uuid

import pytest
from kombu import Connection

from adapters.amqp.publisher import AmqpConfirms, ConfirmingPublisher, Outgoing, Unroutable
from tests.unit.amqp.partner import unique_settings

pytestmark = pytest.mark.rabbitmq


def test_batches_of_confirms_settle_every_tag_once(amqp_url: str) -> None:
    settings = unique_settings(amqp_url)
    queue = f"t.{uuid.uuid4().hex[:8]}.confirms"
    with Connection(amqp_url) as conn:
        channel = conn.channel()
        channel.queue_declare(queue, auto_delete=False)
        publisher = ConfirmingPublisher(settings, name="confirms-test")
        try:
            sent = 0
            for batch in range(4):
                items = [
                    Outgoing(body=f"<m n='{n}'/>".encode(), routing_key=queue, mandatory=True)
                    for n in range(300)
                ]
                lost = 7 + batch * 50  # one mandatory publish to a queue that does not exist
                items[lost] = Outgoing(
                    body=b"<lost/>",
                    routing_key=f"{queue}.missing",
                    mandatory=True,
                    message_id=f"lost-{batch}",
                )
                failures = publisher.publish(items)
                assert list(failures) == [lost]
                assert isinstance(failures[lost], Unroutable)
                sent += len(items) - 1
                confirms = publisher._confirms
                assert isinstance(confirms, AmqpConfirms)
                assert not confirms._unsettled  # every tag settled, none kept
                assert not confirms._settled
                assert confirms._confirmed <= 300 * (batch + 1)
            assert publisher.published == 1200
            assert channel.queue_declare(queue, passive=True).message_count == sent
        finally:
            publisher.close()
            channel.queue_delete(queue)
