"""Async replies (AsyncReplyFlag + ReplyAddress) and subscriber events, delivered through the
database outbox to a test's own SOAP endpoint: retries with backoff, dead letters, restarts."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta

import pytest
from lxml import etree

from cim_schemas import schemas
from cim_schemas.namespaces import GET_METER_READINGS_MESSAGE_NS, MESSAGE_NS, profile_ns
from hub.samples import meter_readings_bytes
from tests.conftest import free_port
from tests.integration.soap.conftest import (
    Receiver,
    Server,
    header,
    received_body,
    zeep_client,
)
from tests.unit.hub.conftest import START
from tests.waiting import wait_until

M = {"m": MESSAGE_NS, "mr": profile_ns("MeterReadings"), "g": GET_METER_READINGS_MESSAGE_NS}


def wait_for(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def send_readings(server: Server, days: int = 1) -> str:
    client, history = zeep_client(server, "ReceiveMeterReadings")
    body = etree.fromstring(meter_readings_bytes(["MTR-1"], START, 96 * days))
    payload = body.find("m:Payload/mr:MeterReadings", namespaces=M)
    assert payload is not None
    mr = client.get_element(f"{{{profile_ns('MeterReadings')}}}MeterReadings")
    head = header("created", "MeterReadings")
    response = client.service.CreatedMeterReadings(
        Header=head, Payload={"MeterReadings": mr.parse(payload, client.wsdl.types)}
    )
    assert response.Reply.Result == "OK", response.Reply
    received_body(history)
    return str(head["MessageID"])


def async_get(server: Server, reply_address: str) -> str:
    client, history = zeep_client(server, "GetMeterReadings")
    head = header("get", "MeterReadings", AsyncReplyFlag=True, ReplyAddress=reply_address)
    response = client.service.GetMeterReadings(
        Header=head,
        Request={
            "GetMeterReadings": {
                "EndDevice": [{"mRID": "MTR-1"}, {"mRID": "GHOST"}],
                "TimeSchedule": [
                    {"scheduleInterval": {"end": START + timedelta(days=1), "start": START}}
                ],
            }
        },
    )
    # the acknowledgement: OK, correlated, no payload
    assert response.Reply.Result == "OK"
    assert response.Header.CorrelationID == head["MessageID"]
    assert response.Payload is None
    received_body(history)
    return str(head["MessageID"])


def test_async_reply_is_delivered_to_reply_address(server: Server, receiver: Receiver) -> None:
    send_readings(server)
    message_id = async_get(server, f"{receiver.url}/ws/ReplyMeterReadings")
    assert receiver.arrived.wait(15)
    path, action, _ = receiver.received[0]
    assert path == "/ws/ReplyMeterReadings"
    assert action == "http://iec.ch/TC57/2011/ReplyMeterReadings/ReplyMeterReadings"
    reply = receiver.bodies()[0]
    assert reply.tag == f"{{{GET_METER_READINGS_MESSAGE_NS}}}MeterReadingsResponseMessage"
    assert schemas.validate(etree.fromstring(etree.tostring(reply))) == []
    assert reply.findtext("g:Header/m:CorrelationID", namespaces=M) == message_id
    assert reply.findtext("g:Reply/m:Result", namespaces=M) == "PARTIAL"
    assert reply.findtext("g:Reply/m:Error/m:ID", namespaces=M) == "GHOST"
    assert len(reply.findall(".//mr:IntervalReadings", namespaces=M)) == 96
    with server.app.uow_factory() as uow:
        assert uow.outbox.pending_count("soap") == 0


def test_delivery_retries_with_backoff(server: Server, receiver: Receiver) -> None:
    receiver.fail_first = 2
    async_get(server, f"{receiver.url}/ws/ReplyMeterReadings")
    assert receiver.arrived.wait(15)
    assert receiver.attempts == 3
    assert len(receiver.received) == 1


def test_delivery_dead_letters_after_max_attempts(server: Server, receiver: Receiver) -> None:
    receiver.always_fail = True
    async_get(server, f"{receiver.url}/ws/ReplyMeterReadings")

    def dead_lettered() -> bool:
        with server.app.uow_factory() as uow:
            return any(d.source == "outbox:soap" for d in uow.dead_letters.list())

    wait_for(dead_lettered)
    assert receiver.attempts == server.service.settings.delivery_max_attempts
    with server.app.uow_factory() as uow:
        letter = next(d for d in uow.dead_letters.list() if d.source == "outbox:soap")
        assert letter.endpoint == f"{receiver.url}/ws/ReplyMeterReadings"
        assert uow.outbox.pending_count("soap") == 0


def test_delivery_survives_a_restart(
    soap_server_factory: Callable[..., Server], sqlite_url: str
) -> None:
    port = free_port()  # nobody listens yet: the first attempts fail
    first = soap_server_factory(delivery_max_attempts=50, delivery_first_delay=0.2)
    async_get(first, f"http://127.0.0.1:{port}/ws/ReplyMeterReadings")
    first.service.stop()
    with first.app.uow_factory() as uow:
        assert uow.outbox.pending_count("soap") == 1
    receiver = Receiver(port=port)
    receiver.start()
    try:
        soap_server_factory(database_url=sqlite_url, meters=False, delivery_max_attempts=50)
        assert receiver.arrived.wait(15)
        assert receiver.received[0][0] == "/ws/ReplyMeterReadings"
    finally:
        receiver.stop()


def test_subscribers_receive_created_events(
    soap_server_factory: Callable[..., Server], receiver: Receiver
) -> None:
    server = soap_server_factory(
        subscribers={"MeterReadings": [f"{receiver.url}/ws/SendMeterReadings"]}
    )
    message_id = send_readings(server)
    assert receiver.arrived.wait(15)
    path, action, _ = receiver.received[0]
    assert path == "/ws/SendMeterReadings"
    assert action == "http://iec.ch/TC57/2011/SendMeterReadings/CreatedMeterReadings"
    event = receiver.bodies()[0]
    assert event.tag == "{http://iec.ch/TC57/2011/MeterReadingsMessage}CreatedMeterReadings"
    assert schemas.validate(etree.fromstring(etree.tostring(event))) == []
    ns = {"w": "http://iec.ch/TC57/2011/MeterReadingsMessage", **M}
    assert event.findtext("w:Header/m:CorrelationID", namespaces=ns) == message_id
    assert event.findtext("w:Header/m:Verb", namespaces=ns) == "created"
    assert len(event.findall(".//mr:IntervalReadings", namespaces=M)) == 96


@pytest.mark.parametrize("address", ["queue://amihub.replies", "not a url"])
def test_non_http_reply_address_is_answered_synchronously(server: Server, address: str) -> None:
    client, history = zeep_client(server, "GetMeterReadings")
    response = client.service.GetMeterReadings(
        Header=header("get", "MeterReadings", AsyncReplyFlag=True, ReplyAddress=address),
        Request={"GetMeterReadings": {"EndDevice": [{"mRID": "MTR-1"}]}},
    )
    assert response.Reply.Result == "OK"
    assert response.Payload is not None
    received_body(history)


def test_a_replayed_event_is_forwarded_once(
    soap_server_factory: Callable[..., Server], receiver: Receiver
) -> None:
    server = soap_server_factory(
        subscribers={"MeterReadings": [f"{receiver.url}/ws/SendMeterReadings"]}
    )
    client, _ = zeep_client(server, "ReceiveMeterReadings")
    body = etree.fromstring(meter_readings_bytes(["MTR-2"], START, 4, registers=False))
    payload = body.find("m:Payload/mr:MeterReadings", namespaces=M)
    mr = client.get_element(f"{{{profile_ns('MeterReadings')}}}MeterReadings")
    parts = {
        "Header": header("created", "MeterReadings"),
        "Payload": {"MeterReadings": mr.parse(payload, client.wsdl.types)},
    }
    assert client.service.CreatedMeterReadings(**parts).Reply.Result == "OK"
    assert client.service.CreatedMeterReadings(**parts).Reply.Result == "OK"  # duplicate
    assert receiver.arrived.wait(15)

    def delivered() -> bool:
        with server.app.uow_factory() as uow:
            return uow.outbox.pending_count("soap") == 0

    wait_until(delivered, 15, "nothing left to deliver")  # the duplicate enqueued nothing
    assert len(receiver.received) == 1


def test_received_end_device_events_reach_subscribers(
    soap_server_factory: Callable[..., Server], receiver: Receiver
) -> None:
    from cim_schemas.profiles.common import IdentifiedObject as Ref
    from cim_schemas.profiles.end_device_events import (
        EndDeviceEvent,
        EndDeviceEvents,
        render_end_device_events,
    )

    server = soap_server_factory(
        subscribers={"EndDeviceEvents": [f"{receiver.url}/ws/SendEndDeviceEvents"]}
    )
    payload = render_end_device_events(
        EndDeviceEvents(
            (
                EndDeviceEvent(
                    "3.26.0.85", created_date_time=START, assets=Ref("MTR-1"), reason="outage"
                ),
            )
        )
    )
    client, history = zeep_client(server, "ReceiveEndDeviceEvents")
    element = client.get_element(f"{{{etree.QName(payload).namespace}}}EndDeviceEvents")
    response = client.service.CreatedEndDeviceEvents(
        Header=header("created", "EndDeviceEvents"),
        Payload={"EndDeviceEvents": element.parse(payload, client.wsdl.types)},
    )
    assert response.Reply.Result == "OK", response.Reply
    received_body(history)
    assert receiver.arrived.wait(15)
    path, action, _ = receiver.received[0]
    assert path == "/ws/SendEndDeviceEvents"
    assert action == "http://iec.ch/TC57/2011/SendEndDeviceEvents/CreatedEndDeviceEvents"
    event = receiver.bodies()[0]
    assert event.tag == "{http://iec.ch/TC57/2011/EndDeviceEventsMessage}CreatedEndDeviceEvents"
    assert schemas.validate(etree.fromstring(etree.tostring(event))) == []


def test_events_raised_inside_amihub_are_delivered(
    soap_server_factory: Callable[..., Server], receiver: Receiver
) -> None:
    """hub.headend's EventPublisher puts created EndDeviceEvents in the 'soap' outbox;
    the SOAP service delivers them to SendEndDeviceEvents."""
    from datetime import UTC, datetime

    from hub.headend import EventPublisher
    from mdm.model import EndDeviceEvent

    server = soap_server_factory(
        subscribers={"EndDeviceEvents": [f"{receiver.url}/ws/SendEndDeviceEvents"]}
    )
    publisher = EventPublisher(server.app.settings)
    with server.app.uow_factory() as uow:
        event = EndDeviceEvent("MTR-1", "3.31.0.68", datetime(2026, 3, 1, 12, tzinfo=UTC))
        assert publisher.publish(uow, [event], "job-1") == 1
        uow.commit()
    server.service.dispatcher.wake()
    assert receiver.arrived.wait(15)
    body = receiver.bodies()[0]
    assert body.tag == "{http://iec.ch/TC57/2011/EndDeviceEventsMessage}CreatedEndDeviceEvents"
    assert schemas.validate(etree.fromstring(etree.tostring(body))) == []
