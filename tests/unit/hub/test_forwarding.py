"""Accepted inbound events go to the noun's subscribers from the pipeline's conclusion, in
the transaction of the effect, whatever adapter the message came through."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from lxml import etree

from cim_schemas import schemas
from hub.bootstrap import App
from hub.forwarding import EventForwarder, operation_name
from hub.messages import InboundMessage
from hub.samples import meter_readings_bytes
from mdm.ports import OutboxItem
from tests.unit.hub.conftest import START, add_meters, make_app

SEND = "http://127.0.0.1:9/ws/SendMeterReadings"


@pytest.fixture
def app(sqlite_url: str) -> Iterator[App]:
    app = make_app(sqlite_url)
    app.pipeline.forwarder = EventForwarder({"MeterReadings": (SEND,)})
    add_meters(app, "MTR-1", "MTR-2")
    yield app
    app.close()


def due(app: App, channel: str = "soap") -> list[OutboxItem]:
    with app.uow_factory() as uow:
        return uow.outbox.claim_due(channel, datetime.now(UTC), 100)


def stored(app: App) -> int:
    with app.uow_factory() as uow:
        return uow.readings.count()


@pytest.mark.parametrize("endpoint", ["sftp:inbox/cis/readings.xml", "cli:import", "amqp:requests"])
def test_an_accepted_event_is_forwarded_from_any_adapter(app: App, endpoint: str) -> None:
    body = meter_readings_bytes(["MTR-1"], START, 4, registers=False, message_id="m-1")
    outcome = app.pipeline.process(InboundMessage(source="cis", endpoint=endpoint, body=body))
    assert outcome.result == "OK"
    [item] = due(app)
    assert (item.destination, item.verb, item.noun) == (SEND, "created", "MeterReadings")
    assert item.headers == {
        "service": "SendMeterReadings",
        "operation": "CreatedMeterReadings",
        "kind": "event",
    }
    event = etree.fromstring(item.body)
    assert schemas.validate(event) == []
    assert event.findtext(".//{*}Header/{*}CorrelationID") == "m-1"
    assert len(event.findall(".//{*}IntervalReadings")) == 4


def test_a_duplicate_forwards_nothing_again(app: App) -> None:
    body = meter_readings_bytes(["MTR-1"], START, 4, registers=False, message_id="m-2")
    for _ in range(2):
        app.pipeline.process(InboundMessage(source="cis", endpoint="cli:import", body=body))
    assert len(due(app)) == 1


def test_a_failed_message_forwards_nothing_and_a_batch_forwards_each(app: App) -> None:
    ghost = meter_readings_bytes(["GHOST"], START, 4, registers=False, message_id="m-3")
    outcome = app.pipeline.process(InboundMessage(source="cis", endpoint="cli:import", body=ghost))
    assert outcome.result == "FAILED"
    assert due(app) == []
    batch = [
        InboundMessage(
            source="cis",
            endpoint="amqp:requests",
            body=meter_readings_bytes([m], START, 4, registers=False, message_id=f"b-{m}"),
        )
        for m in ("MTR-1", "MTR-2")
    ]
    assert [o.result for o in app.pipeline.process_batch(batch)] == ["OK", "OK"]
    assert sorted(i.correlation_id is not None for i in due(app)) == [True, True]
    assert len(due(app)) == 2


def test_requests_and_gets_are_not_events(app: App) -> None:
    body = meter_readings_bytes(["MTR-1"], START, 4, registers=False, verb="create")
    assert app.pipeline.process(InboundMessage("cis", "cli:import", body=body)).result == "OK"
    assert due(app) == []
    assert stored(app) == 4


def test_the_event_is_written_in_the_effects_transaction(app: App) -> None:
    """The outbox row and the readings commit together or not at all: an outbox that
    refuses the row rolls the readings back (nothing stored, nothing to deliver) and the
    message is refused with its input kept, as any internal failure."""

    class Refused(RuntimeError):
        pass

    factory = app.pipeline.uow_factory

    class RefusingOutbox:
        def enqueue(self, **_: object) -> int:
            raise Refused("outbox unavailable")

    def refusing_factory():  # type: ignore[no-untyped-def]
        uow = factory()
        uow.outbox = RefusingOutbox()  # type: ignore[assignment]
        return uow

    app.pipeline.uow_factory = refusing_factory  # type: ignore[assignment]
    body = meter_readings_bytes(["MTR-1"], START, 4, registers=False, message_id="m-4")
    outcome = app.pipeline.process(InboundMessage("cis", "cli:import", body=body))
    app.pipeline.uow_factory = factory
    assert (outcome.result, outcome.errors[0].code) == ("FAILED", "3002")
    assert outcome.dead_letter_id is not None
    assert stored(app) == 0
    assert due(app) == []


def test_operation_names() -> None:
    assert operation_name("created", "MeterReadings") == "CreatedMeterReadings"
    assert operation_name("changed", "EndDeviceEvents") == "ChangedEndDeviceEvents"
