# mypy: disable-error-code="no-untyped-call"
"""Publishing with publisher confirms, batched: many publishes, one wait for the broker.

Waiting for each confirm costs a round trip per message (~2k/s on RabbitMQ);
here a batch is published back to back and the broker's acks (``multiple``
acks included) are collected once. How confirms work depends on the kombu
transport, so, as kombu maps transport aliases, :data:`CONFIRMS` maps a
transport's ``driver_type`` to its confirm strategy:

* ``amqp`` (py-amqp, RabbitMQ): ``confirm.select`` on the channel, delivery tags
  counted from 1, ``basic.ack``/``basic.nack`` drained from the connection;
  ``basic.return`` of a mandatory publish (no such reply queue) is a failure;
* ``memory`` and other virtual transports: a publish is done when the call returns.

The publisher owns its connection: never share it with a consumer, whose
deliveries would otherwise be drained while confirms are awaited.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import amqp
from amqp import spec
from amqp.serialization import dumps
from kombu.connection import Connection
from kombu.messaging import Producer

from adapters.amqp.connection import make_connection, safe_url
from cim_schemas.errors import PermanentError, TransportUnavailable
from hub.settings import AmqpSettings

log = logging.getLogger("amihub.amqp")

#: basic.publish's argument signature (ticket, exchange, routing key, mandatory, immediate)
_PUBLISH_ARGS = "Bssbb"


@dataclass(frozen=True)
class Outgoing:
    """One message to publish."""

    body: bytes
    routing_key: str
    exchange: str = ""  # "" = the default exchange: routing_key is a queue name
    headers: dict[str, Any] = field(default_factory=dict)
    message_id: str | None = None
    correlation_id: str | None = None
    content_type: str = "application/xml"
    #: a return (no queue takes it) counts as a failure
    mandatory: bool = False
    #: the message type property (e.g. "create.MeterReadings")
    type: str | None = None
    reply_to: str | None = None
    #: must be the publishing connection's own user (RabbitMQ checks it)
    user_id: str | None = None


class Unroutable(PermanentError):
    """The broker returned a mandatory message: no queue is bound for it."""


class Nacked(TransportUnavailable):
    """The broker refused to take responsibility for the message (basic.nack)."""


class Confirms(Protocol):
    def published(self, item: Outgoing) -> int: ...
    def wait(self, tags: Sequence[int], timeout: float) -> dict[int, Exception]: ...
    def cork(self) -> None: ...
    def uncork(self) -> None: ...


class ImmediateConfirms:
    """Virtual transports (memory): the publish call itself is the confirmation."""

    def __init__(self, connection: Connection, channel: Any) -> None:
        self._next = 0

    def published(self, item: Outgoing) -> int:
        self._next += 1
        return self._next

    def wait(self, tags: Sequence[int], timeout: float) -> dict[int, Exception]:
        return {}

    def cork(self) -> None:
        pass

    def uncork(self) -> None:
        pass


class AmqpConfirms:
    """RabbitMQ publisher confirms on a py-amqp channel, collected per batch."""

    def __init__(self, connection: Connection, channel: Any) -> None:
        self.connection = connection
        channel.confirm_select()
        self._next = 1
        self._confirmed = 0  # every tag up to this one is settled
        self._settled: dict[int, Exception | None] = {}
        self._unsettled: set[int] = set()
        self._returned: dict[str, Exception] = {}  # message_id -> why
        self._tag_of_id: dict[str, int] = {}
        self._uncork: Callable[[], None] | None = None
        channel.events["basic_ack"].add(self._on_ack)
        channel.events["basic_nack"].add(self._on_nack)
        channel.events["basic_return"].add(self._on_return)

    #: corked writes are flushed when they reach this size (bytes)
    CORK_LIMIT = 1 << 20

    def cork(self) -> None:
        """Collect the publishes' frames and write them with one ``sendall``, not one each.

        py-amqp writes every publish at once (method, header and body frames);
        the frame buffer is reused, so each write is copied here.
        """
        transport = self.connection.connection.transport
        send = transport._write
        chunks: list[bytes] = []
        size = 0

        def write(data: bytes) -> None:
            nonlocal size
            chunks.append(bytes(data))
            size += len(data)
            if size >= self.CORK_LIMIT:
                send(b"".join(chunks))
                chunks.clear()
                size = 0

        def uncork() -> None:
            transport._write = send
            if chunks:
                data = b"".join(chunks)
                chunks.clear()
                send(data)

        transport._write = write
        self._uncork = uncork

    def uncork(self) -> None:
        uncork, self._uncork = self._uncork, None
        if uncork is not None:
            uncork()

    def published(self, item: Outgoing) -> int:
        tag = self._next
        self._next += 1
        self._unsettled.add(tag)
        if item.mandatory and item.message_id:
            self._tag_of_id[item.message_id] = tag
        return tag

    def _settle(self, delivery_tag: int, multiple: bool, error: Exception | None) -> None:
        if multiple:
            # every tag up to _confirmed is settled already: only the new ones are looked
            # at (was: the whole unsettled set scanned on every ack frame)
            low = self._confirmed + 1
            self._confirmed = max(self._confirmed, delivery_tag)
            unsettled = self._unsettled
            tags = [t for t in range(low, delivery_tag + 1) if t in unsettled]
        else:
            tags = [delivery_tag]
        for tag in tags:
            self._unsettled.discard(tag)
            self._settled[tag] = error

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        self._settle(delivery_tag, multiple, None)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        self._settle(delivery_tag, multiple, Nacked("the broker nacked the message"))

    def _on_return(self, exc: Exception, exchange: str, routing_key: str, message: Any) -> None:
        message_id = getattr(message, "properties", {}).get("message_id")
        reason = Unroutable(f"no queue for {exchange or '(default exchange)'} {routing_key}: {exc}")
        log.warning("the broker returned a message: %s", reason)
        if message_id and message_id in self._tag_of_id:
            self._returned[message_id] = reason

    def wait(self, tags: Sequence[int], timeout: float) -> dict[int, Exception]:
        deadline = time.monotonic() + timeout
        pending = set(tags)
        # drain_events handles one frame (often one ack) at a time: a set intersection of
        # the whole batch after each was O(batch) a frame; isdisjoint stops at the first
        # unsettled tag
        while not self._unsettled.isdisjoint(pending):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TransportUnavailable(
                    f"{len(pending & self._unsettled)} publisher confirm(s) not received "
                    f"within {timeout} s"
                )
            try:
                self.connection.drain_events(timeout=min(remaining, 1.0))
            except TimeoutError:
                continue
        failures: dict[int, Exception] = {}
        for tag in pending:
            error = self._settled.pop(tag, None)
            if error is not None:
                failures[tag] = error
        for message_id, error in list(self._returned.items()):
            tag = self._tag_of_id.pop(message_id, 0)
            if tag in pending:
                failures[tag] = error
                del self._returned[message_id]
        for message_id, tag in list(self._tag_of_id.items()):
            if tag in pending:
                del self._tag_of_id[message_id]
        return failures


#: kombu transport driver_type -> confirm strategy (virtual transports: immediate)
CONFIRMS: dict[str, type[AmqpConfirms] | type[ImmediateConfirms]] = {
    "amqp": AmqpConfirms,
    "memory": ImmediateConfirms,
}


class ConfirmingPublisher:
    """Publishes batches and returns, per message, what the broker said.

    Connection errors raise :class:`~cim_schemas.errors.TransportUnavailable` (the
    connection is dropped and made again on the next call); per-message
    failures (nack, return) come back in the result, index -> exception.
    """

    def __init__(self, settings: AmqpSettings, name: str = "publisher") -> None:
        self.settings = settings
        self.name = name
        self._connection: Connection | None = None
        self._producer: Producer | None = None
        self._confirms: Confirms | None = None
        #: batches published and messages in them (one wait for confirms a batch)
        self.batches = 0
        self.published = 0

    def _ensure(self) -> tuple[Producer, Confirms]:
        if self._producer is None or self._confirms is None:
            connection = make_connection(self.settings, self.name)
            try:
                connection.connect()
                channel = connection.channel()
                strategy = CONFIRMS.get(connection.transport.driver_type, ImmediateConfirms)
                self._confirms = strategy(connection, channel)
                self._producer = Producer(channel, auto_declare=False)
            except Exception:
                connection.release()
                raise
            self._connection = connection
            log.debug("%s connected to %s", self.name, safe_url(connection))
        return self._producer, self._confirms

    @property
    def connection_errors(self) -> tuple[type[BaseException], ...]:
        probe = self._connection or make_connection(self.settings)
        return tuple(probe.connection_errors) + tuple(probe.channel_errors) + (OSError,)

    def publish(self, items: Sequence[Outgoing]) -> dict[int, Exception]:
        """Publish ``items`` and wait once for all confirms; index -> failure."""
        if not items:
            return {}
        errors = self.connection_errors
        try:
            producer, confirms = self._ensure()
            tags: list[int] = []
            confirms.cork()
            try:
                self._publish_all(producer, confirms, items, tags)
            finally:
                confirms.uncork()
            by_tag = confirms.wait(tags, self.settings.confirm_timeout)
        except TransportUnavailable:
            self.close()
            raise
        except errors as exc:
            self.close()
            raise TransportUnavailable(f"{self.name}: {type(exc).__name__}: {exc}") from exc
        self.batches += 1
        self.published += len(items)
        index = {tag: i for i, tag in enumerate(tags)}
        return {index[tag]: exc for tag, exc in by_tag.items()}

    @staticmethod
    def _publish_all(
        producer: Producer, confirms: Confirms, items: Sequence[Outgoing], tags: list[int]
    ) -> None:
        channel = producer.channel
        if isinstance(channel, amqp.Channel):
            # py-amqp (RabbitMQ): the basic.publish frames written as its basic_publish
            # writes them, without kombu's per-message preparation (a quarter of the
            # cost), without basic_publish's drain_events(timeout=0) per publish (a read
            # attempt each; the acks and a connection.blocked are read in wait) and with
            # the method arguments serialised once per exchange and routing key
            connection = channel.connection
            if not connection:
                raise TransportUnavailable("publish: the channel's connection is closed")
            write_frame = connection.frame_writer
            channel_id = channel.channel_id
            arguments: dict[tuple[str, str, bool], bytes] = {}
            now = int(time.time())
            for item in items:
                message = amqp.Message(
                    item.body,
                    application_headers=dict(item.headers),
                    message_id=item.message_id or str(uuid.uuid4()),
                    content_type=item.content_type,
                    content_encoding="binary",
                    delivery_mode=2,
                    timestamp=now,
                    **_optional(
                        correlation_id=item.correlation_id,
                        type=item.type,
                        reply_to=item.reply_to,
                        user_id=item.user_id,
                    ),
                )
                key = (item.exchange, item.routing_key, item.mandatory)
                args = arguments.get(key)
                if args is None:
                    args = arguments[key] = dumps(_PUBLISH_ARGS, (0, *key, False))
                try:
                    write_frame(1, channel_id, spec.Basic.Publish, args, message)
                except StopIteration:  # as py-amqp's send_method: the connection is gone
                    raise TransportUnavailable("publish: the connection is closed") from None
                tags.append(confirms.published(item))
            return
        for item in items:
            producer.publish(
                item.body,
                routing_key=item.routing_key,
                exchange=item.exchange,
                headers=dict(item.headers),
                message_id=item.message_id or str(uuid.uuid4()),
                correlation_id=item.correlation_id,
                content_type=item.content_type,
                content_encoding="binary",
                delivery_mode=2,
                mandatory=item.mandatory,
                timestamp=int(time.time()),
                **_optional(type=item.type, reply_to=item.reply_to, user_id=item.user_id),
            )
            tags.append(confirms.published(item))

    def heartbeat_check(self) -> None:
        if self._connection is not None and self.settings.heartbeat:
            try:
                self._connection.heartbeat_check()
            except self.connection_errors:
                self.close()

    def close(self) -> None:
        connection, self._connection = self._connection, None
        self._producer = None
        self._confirms = None
        if connection is not None:
            try:
                connection.release()
            except (OSError, *connection.connection_errors):  # already gone
                pass


def _optional(**properties: str | None) -> dict[str, str]:
    return {k: v for k, v in properties.items() if v is not None}
