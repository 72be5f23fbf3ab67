"""A meter alarm reaches a partner's queue on the real RabbitMQ: simulated meters over TCP,
a read stores the alarm and writes the outbox in one transaction, the AMQP outbox dispatcher
publishes it on the events exchange, the partner's queue (bound to created.EndDeviceEvents)
receives a schema-valid EventMessage."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from lxml import etree

from cim_schemas.schemas import message_schema
from hes.client.session import ClientIdentity, MeterCredentials, Security
from hes.engine import (
    EnginePolicy,
    MeterOutcome,
    MeterTarget,
    ReadCommand,
    ReadingEngine,
)
from hes.push import PushDecoder, PushListener
from hes.simulator.fleet import Fleet, SimulatorThread
from hes.simulator.meter import EventCode, interval_end, interval_index
from hub.bootstrap import App
from hub.headend import HeadEndOutbox
from hub.headend_store import MdmReadingSink
from hub.push_store import MdmPushSink
from tests.conftest import free_port
from tests.integration.amqp.conftest import Start
from tests.integration.hes.test_push import Directory
from tests.unit.hub.conftest import add_meters, make_app
from tests.waiting import wait_until

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    f = Fleet.build(2, free_port(), seed=21)
    with SimulatorThread(f):
        yield f


@pytest.fixture
def app(sqlite_url: str, fleet: Fleet) -> Iterator[App]:
    a = make_app(sqlite_url)
    add_meters(a, *(f"MTR-{m.serial}" for m in fleet.meters), install=False)
    yield a
    a.close()


def targets(fleet: Fleet) -> tuple[MeterTarget, ...]:
    return tuple(
        MeterTarget(
            f"MTR-{m.serial}",
            fleet.endpoint(i).host,
            fleet.endpoint(i).port,
            fleet.endpoint(i).logical_device,
            MeterCredentials(Security.HLS, system_title=m.system_title, keys=m.keys),
        )
        for i, m in enumerate(fleet.meters)
    )


def test_partner_queue_receives_a_meter_alarm(rabbit: Start, app: App, fleet: Fleet) -> None:
    service, partner = rabbit(
        app, partners=[{"name": "cis", "events": ["created.EndDeviceEvents"]}]
    )
    queue = service.settings.partners[0].queue_name
    tampered = f"MTR-{fleet.meters[1].serial}"
    fleet.meters[1].faults.tamper_at = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    end = interval_end(interval_index(datetime.now(UTC)) - 1)
    engine = ReadingEngine(
        MdmReadingSink(app.uow_factory, app.settings.default_utility, HeadEndOutbox(app.settings)),
        policy=EnginePolicy(concurrency=2, timeout=2.0),
        identity=ClientIdentity(),
    )
    report = engine.run(
        ReadCommand(targets(fleet), end - timedelta(hours=2), end, read_events=True)
    )
    assert report.count(MeterOutcome.DONE) == 2
    assert service.dispatcher is not None
    service.dispatcher.wake()

    [event] = partner.get(queue, 1, timeout=20)
    assert event.routing_key == "created.EndDeviceEvents"
    assert event.properties["type"] == "created.EndDeviceEvents"
    doc = etree.fromstring(event.body)
    assert message_schema().validate(doc), message_schema().error_log
    ns = {"m": "http://iec.ch/TC57/2011/schema/message"}
    assert doc.findtext("m:Header/m:Verb", namespaces=ns) == "created"
    assert doc.findtext("m:Header/m:Noun", namespaces=ns) == "EndDeviceEvents"
    assert b'ref="3.12.29.212"' in event.body
    assert tampered.encode() in event.body
    assert b"meter_code" in event.body
    assert event.properties["message_id"]

    # the same alarm read again: nothing new is published
    again = engine.run(ReadCommand(targets(fleet), end - timedelta(hours=2), end, read_events=True))
    assert again.events_stored == 0
    service.dispatcher.wake()

    def drained() -> bool:
        with app.uow_factory() as uow:
            return uow.outbox.pending_count("amqp") == 0

    wait_until(drained, 10, "the outbox delivered")  # then nothing more can be published
    assert partner.get(queue, 1, timeout=1) == []


def test_partner_queue_receives_a_pushed_alarm_and_a_security_event(
    rabbit: Start, app: App, fleet: Fleet
) -> None:
    service, partner = rabbit(app, partners=[{"name": "cis", "events": ["*.EndDeviceEvents"]}])
    queue = service.settings.partners[0].queue_name
    sink = MdmPushSink(app.uow_factory, app.settings.default_utility, HeadEndOutbox(app.settings))
    with PushListener(
        PushDecoder(Directory(fleet, range(2))), sink, sink.security, port=free_port()
    ) as server:
        frame = fleet.alarm_frame(0, EventCode.POWER_DOWN)
        fleet.send_push(frame, server.host, server.port)
        fleet.send_push(frame, server.host, server.port)  # replayed
        assert service.dispatcher is not None
        got = []
        deadline = time.monotonic() + 20
        while len(got) < 2 and time.monotonic() < deadline:
            service.dispatcher.wake()
            got += partner.get(queue, 2 - len(got), timeout=0.5)
    bodies = b"".join(e.body for e in got)
    assert len(got) == 2
    assert b'ref="3.26.0.85"' in bodies  # power down, pushed
    assert b'ref="3.12.43.257"' in bodies  # the replay, a security event
    assert {e.routing_key for e in got} == {"created.EndDeviceEvents"}
