"""A partner system in tests: publishes requests, reads its reply queue and the dead letters.

Plain kombu, as a partner that only knows docs/amqp.md would write it; runs on
``memory://`` (unit tests) and on RabbitMQ (integration tests).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from kombu import Connection, Exchange, Producer, Queue

from adapters.amqp.connection import make_connection
from hub.samples import meter_readings_bytes
from hub.settings import AmqpSettings

START = datetime(2026, 3, 1, tzinfo=UTC)


def unique_settings(url: str, **overrides: Any) -> AmqpSettings:
    """Exchange and queue names of one test only, so tests never see each other's messages."""
    tag = uuid.uuid4().hex[:8]
    values: dict[str, Any] = {
        "enabled": True,
        "url": url,
        "request_exchange": f"t.{tag}.requests",
        "request_queue": f"t.{tag}.requests",
        "events_exchange": f"t.{tag}.events",
        "dead_letter_exchange": f"t.{tag}.dead-letter",
        "dead_letter_queue": f"t.{tag}.dead-letter",
        "batch_wait": 0.01,
        "retry_delay": 0.0,
        "reconnect_delay": 0.1,
        "reconnect_max_delay": 1.0,
    }
    values.update(overrides)
    return AmqpSettings(**values)


def readings_request(meter: str, day: int = 0, intervals: int = 96, **kwargs: Any) -> bytes:
    start = START + timedelta(days=day)
    kwargs.setdefault("verb", "create")
    kwargs.setdefault("registers", False)
    return meter_readings_bytes([meter], start, intervals, **kwargs)


@dataclass
class Received:
    body: bytes
    properties: dict[str, Any]
    headers: dict[str, Any]
    routing_key: str


class Partner:
    def __init__(self, settings: AmqpSettings, reply_queue: str | None = None) -> None:
        self.settings = settings
        self.connection: Connection = make_connection(settings)
        self.connection.connect()
        self.channel = self.connection.channel()
        self.producer = Producer(self.channel, auto_declare=False)
        self.reply_queue = reply_queue or f"{settings.request_queue}.replies"
        Queue(self.reply_queue, durable=False, auto_delete=False)(self.channel).declare()
        self.requests = Exchange(settings.request_exchange, type="topic", durable=True)

    def close(self) -> None:
        self.connection.release()

    def send(
        self,
        body: bytes,
        routing_key: str = "create.MeterReadings",
        *,
        message_id: str | None = None,
        reply: bool = True,
        headers: dict[str, Any] | None = None,
        user_id: str | None = None,
        exchange: str | None = None,
    ) -> str:
        mid = message_id or str(uuid.uuid4())
        props: dict[str, Any] = {"message_id": mid}
        if reply:
            props["reply_to"] = self.reply_queue
        if user_id:
            props["user_id"] = user_id
        self.producer.publish(
            body,
            exchange=self.settings.request_exchange if exchange is None else exchange,
            routing_key=routing_key,
            headers=headers or {},
            content_type="application/xml",
            content_encoding="binary",
            delivery_mode=2,
            **props,
        )
        return mid

    def get(self, queue: str, count: int = 1, timeout: float = 10.0) -> list[Received]:
        """``count`` messages from ``queue`` (acked), or fewer when ``timeout`` passes."""
        got: list[Received] = []
        q = Queue(queue, no_declare=True)(self.channel)
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            message = q.get(no_ack=True)
            if message is None:
                time.sleep(0.01)
                continue
            body = message.body if isinstance(message.body, bytes) else message.body.encode()
            got.append(
                Received(
                    body,
                    dict(message.properties),
                    dict(message.headers or {}),
                    message.delivery_info.get("routing_key", ""),
                )
            )
        return got

    def replies(self, count: int = 1, timeout: float = 10.0) -> list[Received]:
        return self.get(self.reply_queue, count, timeout)

    def dead_letters(self, count: int = 1, timeout: float = 10.0) -> list[Received]:
        return self.get(self.settings.dead_letter_queue, count, timeout)

    def depth(self, queue: str) -> int:
        _, count, _ = Queue(queue, no_declare=True)(self.channel).queue_declare(passive=True)
        return int(count)


def get_meter_readings_request(meter: str, start: str, end: str, message_id: str) -> bytes:
    """A GetMeterReadings RequestMessage, as docs/amqp.md shows it."""
    from cim_schemas.namespaces import MESSAGE_NS, profile_ns

    return f"""<?xml version="1.0" encoding="UTF-8"?>
<RequestMessage xmlns="{MESSAGE_NS}" xmlns:gmr="{profile_ns("GetMeterReadings")}">
  <Header><Verb>get</Verb><Noun>MeterReadings</Noun>
    <Timestamp>2026-03-02T10:00:00Z</Timestamp><Source>CIS</Source>
    <MessageID>{message_id}</MessageID></Header>
  <Request><StartTime>{start}</StartTime><EndTime>{end}</EndTime>
    <gmr:GetMeterReadings><gmr:EndDevice><gmr:mRID>{meter}</gmr:mRID></gmr:EndDevice>
    </gmr:GetMeterReadings>
  </Request>
</RequestMessage>""".encode()
