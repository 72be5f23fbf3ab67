"""``amihub serve`` with ``[amqp] enabled = true``: the consumer and the outbox publisher.

The composition root builds it (``hub.bootstrap.amqp_service``, which
:data:`hub.serve.SERVICE_ALIASES` names, with the mapping importer). The
service runs two threads, each with its own broker connection(s):

* the consumer of the request queue (:class:`~adapters.amqp.consumer.AmqpConsumer`);
* the outbox dispatcher of channel ``"amqp"`` (:class:`hub.outbox.OutboxDispatcher`),
  which publishes events and async replies with batched publisher confirms.

Outbox destinations (what ``uow.outbox.enqueue(channel="amqp", destination=...)`` takes):

* ``"created.MeterReadings"`` (any routing key): the events exchange;
  ``""``: the events exchange with the routing key ``<verb>.<noun>`` of the item;
* ``"queue:<name>"``: straight to a queue (an async reply to a partner's queue);
  a queue that does not exist is a permanent failure (dead-lettered by the dispatcher).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

from adapters.amqp.consumer import AmqpConsumer
from adapters.amqp.identity import SenderResolver
from adapters.amqp.mapping import MappingGate, MappingImporter
from adapters.amqp.publisher import ConfirmingPublisher, Outgoing
from cim_schemas.errors import TransportUnavailable
from hub.outbox import OutboxDispatcher
from hub.security import UserDirectory
from mdm.ports import OutboxItem

if TYPE_CHECKING:
    from hub.app import HubApp

log = logging.getLogger("amihub.amqp")

#: the outbox channel this adapter delivers
CHANNEL = "amqp"
QUEUE_PREFIX = "queue:"
#: namespace of outbox message ids (stable when an item is sent again after a crash)
OUTBOX_NAMESPACE = uuid.UUID("0b6a3d52-41c4-4a8f-8f0e-7d6c2a9e5b31")


def event_destination(verb: str, noun: str) -> str:
    """Outbox destination of an event on the events exchange: ``created.MeterReadings``."""
    return f"{verb}.{noun}"


def queue_destination(queue: str) -> str:
    """Outbox destination of a message for one queue (an async reply)."""
    return f"{QUEUE_PREFIX}{queue}"


class AmqpService:
    def __init__(
        self, app: HubApp, *, importer: MappingImporter | None = None, name: str = "amqp"
    ) -> None:
        self.name = name
        self.settings = settings = app.settings.amqp
        self.consumer = AmqpConsumer(
            app.pipeline,
            app.uow_factory,
            settings,
            SenderResolver(UserDirectory(app.settings.users), settings.relay_users, name),
            MappingGate(settings.mappings_dir, importer),
            app.routes.operations,
            name=name,
            journal=app.message_journal,
        )
        self.outbox_publisher = ConfirmingPublisher(settings, name=f"{name}-outbox")
        self.dispatcher = (
            OutboxDispatcher(
                app.uow_factory,
                CHANNEL,
                send_batch=self.send_outbox,
                batch_size=settings.outbox_batch,
            )
            if settings.outbox
            else None
        )
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self.consumer.stop_event.clear()
            self._thread = threading.Thread(
                target=self.consumer.run, name=f"{self.name}-consumer", daemon=True
            )
            self._thread.start()
        if self.dispatcher is not None:
            self.dispatcher.start()

    def stop(self, timeout: float = 30.0) -> None:
        self.consumer.stop()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self.dispatcher is not None:
            self.dispatcher.stop(timeout)
        self.outbox_publisher.close()

    def wait_consuming(self, timeout: float = 10.0) -> bool:
        return self.consumer.consuming.wait(timeout)

    # -- outbox ------------------------------------------------------------------------------

    def outgoing(self, item: OutboxItem) -> Outgoing:
        exchange, key, mandatory = self.settings.events_exchange, item.destination, False
        if key.startswith(QUEUE_PREFIX):
            exchange, key, mandatory = "", key[len(QUEUE_PREFIX) :], True
        return Outgoing(
            body=item.body,
            routing_key=key or event_destination(item.verb, item.noun),
            exchange=exchange,
            headers=dict(item.headers),
            message_id=str(
                uuid.uuid5(OUTBOX_NAMESPACE, f"{item.id}\n{item.created_at.isoformat()}")
            ),
            correlation_id=item.correlation_id,
            mandatory=mandatory,
            type=f"{item.verb}.{item.noun}",
        )

    def send_outbox(self, items: Sequence[OutboxItem]) -> dict[int, Exception]:
        """OutboxDispatcher's send_batch: one batch of publishes, one wait for confirms."""
        try:
            failures = self.outbox_publisher.publish([self.outgoing(i) for i in items])
        except TransportUnavailable as exc:
            return {item.id: exc for item in items}
        return {items[index].id: exc for index, exc in failures.items()}
