# mypy: disable-error-code="no-untyped-call"
"""What amihub declares on the broker (all durable; documented in docs/amqp.md).

::

    amihub.requests      topic exchange   partners publish requests, routing key <verb>.<Noun>
      -> amihub.requests queue (binding "#"; dead-letter exchange amihub.dead-letter)
    amihub.events        topic exchange   amihub publishes created.MeterReadings, ...
      -> amihub.partner.<name> queues, bound with each partner's event keys
    amihub.dead-letter   topic exchange   refused and poison messages, with amihub-* headers
      -> amihub.dead-letter queue (binding "#")

Replies go through the default exchange to the queue named in ``reply_to``
(a partner's own queue, or ``amq.rabbitmq.reply-to``). With ``quorum = true``
the queues are quorum queues; an existing queue keeps its type (RabbitMQ
refuses to redeclare it with other arguments).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kombu.connection import Connection
from kombu.entity import Exchange, Queue, binding

from hub.settings import AmqpSettings

#: routing key of the catch-all bindings
ALL = "#"


@dataclass(frozen=True)
class Topology:
    request_exchange: Exchange
    request_queue: Queue
    events_exchange: Exchange
    dead_letter_exchange: Exchange
    dead_letter_queue: Queue
    partner_queues: list[Queue] = field(default_factory=list)

    @classmethod
    def from_settings(cls, settings: AmqpSettings) -> Topology:
        def args(dead_letter: bool) -> dict[str, Any]:
            a: dict[str, Any] = {}
            if settings.quorum:
                a["x-queue-type"] = "quorum"
            if dead_letter:
                a["x-dead-letter-exchange"] = settings.dead_letter_exchange
            return a

        requests = Exchange(settings.request_exchange, type="topic", durable=True)
        events = Exchange(settings.events_exchange, type="topic", durable=True)
        dlx = Exchange(settings.dead_letter_exchange, type="topic", durable=True)
        partner_queues = [
            Queue(
                p.queue_name,
                bindings=[binding(events, routing_key=key) for key in p.events],
                durable=True,
                queue_arguments=args(False),
            )
            for p in settings.partners
        ]
        return cls(
            request_exchange=requests,
            request_queue=Queue(
                settings.request_queue,
                exchange=requests,
                routing_key=ALL,
                durable=True,
                queue_arguments=args(True),
            ),
            events_exchange=events,
            dead_letter_exchange=dlx,
            dead_letter_queue=Queue(
                settings.dead_letter_queue,
                exchange=dlx,
                routing_key=ALL,
                durable=True,
                queue_arguments=args(False),
            ),
            partner_queues=partner_queues,
        )

    def declare(self, connection: Connection) -> None:
        """Declare every exchange, queue and binding (idempotent)."""
        with connection.channel() as channel:
            exchanges = (self.request_exchange, self.events_exchange, self.dead_letter_exchange)
            for exchange in exchanges:
                exchange(channel).declare()
            for queue in (self.request_queue, self.dead_letter_queue, *self.partner_queues):
                queue(channel).declare()
