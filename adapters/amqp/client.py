"""A small request/reply client: what a partner (or ``amihub demo``) needs to talk to amihub.

::

    with AmqpClient(settings.amqp) as client:          # memory:// or amqp(s)://
        reply = client.request(body, "create.MeterReadings")
        reply.result, reply.body                        # "OK", the ResponseMessage

It publishes to the request exchange with ``reply_to`` = a queue of its own and
waits for the reply whose ``correlation_id`` is the request's ``message_id``.
On ``memory://`` it must run in the same process as the service.
"""

# mypy: disable-error-code="no-untyped-call"
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from kombu.entity import Queue
from kombu.messaging import Producer

from adapters.amqp import headers as hdr
from adapters.amqp.connection import make_connection
from cim_schemas.errors import TransportUnavailable
from hub.settings import AmqpSettings


@dataclass(frozen=True)
class ClientReply:
    body: bytes
    result: str  # OK | PARTIAL | FAILED (the amihub-result header)
    correlation_id: str
    headers: dict[str, Any]


class AmqpClient:
    def __init__(self, settings: AmqpSettings, *, user_id: str | None = None) -> None:
        self.settings = settings
        self.user_id = user_id
        self.connection = make_connection(settings, "amihub-client")
        self.connection.connect()
        self.channel = self.connection.channel()
        self.producer = Producer(self.channel, auto_declare=False)
        self.reply_queue = f"amihub.client.{uuid.uuid4().hex[:12]}"
        self._queue = Queue(self.reply_queue, durable=False, auto_delete=True)(self.channel)
        self._queue.declare()
        self._early: dict[str, ClientReply] = {}

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._queue.delete()
        finally:
            self.connection.release()

    def post(
        self,
        body: bytes,
        routing_key: str,
        *,
        message_id: str | None = None,
        reply: bool = False,
        headers: dict[str, Any] | None = None,
    ) -> str:
        """Publish a request; returns its message id."""
        mid = message_id or str(uuid.uuid4())
        props: dict[str, Any] = {"message_id": mid}
        if reply:
            props["reply_to"] = self.reply_queue
        if self.user_id:
            props["user_id"] = self.user_id
        self.producer.publish(
            body,
            exchange=self.settings.request_exchange,
            routing_key=routing_key,
            headers=headers or {},
            content_type="application/xml",
            content_encoding="binary",
            delivery_mode=2,
            **props,
        )
        return mid

    def request(
        self,
        body: bytes,
        routing_key: str,
        *,
        timeout: float = 30.0,
        message_id: str | None = None,
        headers: dict[str, Any] | None = None,
    ) -> ClientReply:
        """Publish a request and wait for its reply."""
        mid = self.post(body, routing_key, message_id=message_id, reply=True, headers=headers)
        return self.reply(mid, timeout)

    def reply(self, message_id: str, timeout: float = 30.0) -> ClientReply:
        deadline = time.monotonic() + timeout
        while message_id not in self._early:
            if time.monotonic() > deadline:
                raise TransportUnavailable(f"no reply to {message_id} within {timeout} s")
            message = self._queue.get(no_ack=True)
            if message is None:
                time.sleep(0.005)
                continue
            heads = dict(message.headers or {})
            body = message.body if isinstance(message.body, bytes) else message.body.encode()
            got = ClientReply(
                body=body,
                result=str(heads.get(hdr.RESULT, "")),
                correlation_id=str(message.properties.get("correlation_id", "")),
                headers=heads,
            )
            self._early[got.correlation_id] = got
        return self._early.pop(message_id)
