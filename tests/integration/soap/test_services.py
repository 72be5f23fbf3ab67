"""Every service answers a real zeep client over real HTTP, with messages valid against our XSDs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import requests
from lxml import etree

from adapters.soap.catalogue import SERVICES, render_wsdl
from cim_schemas.namespaces import MESSAGE_NS, profile_ns
from cim_schemas.profiles._common import IdentifiedObject
from cim_schemas.profiles.end_device_controls import (
    EndDeviceControl,
    EndDeviceControls,
    render_end_device_controls,
)
from cim_schemas.profiles.meter_read_schedule import (
    MeterReadSchedule,
    render_meter_read_schedule,
)
from hub.samples import linkage, meter_config, meter_readings_bytes, usage_point_config
from tests.integration.soap.conftest import (
    Server,
    header,
    received_body,
    wrapper_parts,
    zeep_client,
)
from tests.unit.hub.conftest import START

M = {"m": MESSAGE_NS, "mr": profile_ns("MeterReadings")}


def test_wsdl_files_are_generated_from_the_catalogue() -> None:
    for spec in SERVICES.values():
        assert spec.wsdl_file.read_text(encoding="utf-8") == render_wsdl(spec), spec.name


@pytest.mark.parametrize("name", list(SERVICES))
def test_every_service_publishes_its_wsdl_with_iec_names(server: Server, name: str) -> None:
    client, _ = zeep_client(server, name)
    spec = SERVICES[name]
    service = client.wsdl.services[name]
    port = service.ports[spec.port]
    assert port.binding_options["address"] == server.endpoint(name)
    operations = port.binding._operations
    assert sorted(operations) == sorted(op.name for op in spec.operations)
    for op in spec.operations:
        assert operations[op.name].soapaction == f"http://iec.ch/TC57/2011/{name}/{op.name}"


def test_xsds_are_served_and_paths_cannot_escape(server: Server) -> None:
    ok = requests.get(f"{server.url}/xsd/messages/MeterReadingsMessage.xsd", timeout=5)
    assert ok.status_code == 200
    assert b"MeterReadingsMessage" in ok.content
    for bad in ("../settings.py", "messages/../../xml.py", "%2e%2e/x.xsd"):
        assert requests.get(f"{server.url}/xsd/{bad}", timeout=5).status_code == 404


def _load_readings(server: Server, days: int = 2) -> None:
    client, history = zeep_client(server, "ReceiveMeterReadings")
    body = etree.fromstring(
        meter_readings_bytes(["MTR-1", "MTR-2"], START, 96 * days).replace(
            b"<EventMessage", b"<EventMessage"
        )
    )
    # the sample is an EventMessage; send its payload in the CreatedMeterReadings wrapper
    payload = body.find("m:Payload/mr:MeterReadings", namespaces=M)
    assert payload is not None
    parts = {"Header": header("created", "MeterReadings"), "Payload": {"MeterReadings": None}}
    mr = client.get_element(f"{{{profile_ns('MeterReadings')}}}MeterReadings")
    parts["Payload"] = {"MeterReadings": mr.parse(payload, client.wsdl.types)}
    response = client.service.CreatedMeterReadings(**parts)
    assert response.Reply.Result == "OK", response.Reply
    received_body(history)


def test_receive_then_get_meter_readings(server: Server) -> None:
    _load_readings(server)
    client, history = zeep_client(server, "GetMeterReadings")
    response = client.service.GetMeterReadings(
        Header=header("get", "MeterReadings"),
        Request={
            "GetMeterReadings": {
                "EndDevice": [{"mRID": "MTR-1"}],
                "TimeSchedule": [
                    {"scheduleInterval": {"end": START + timedelta(days=1), "start": START}}
                ],
            }
        },
    )
    assert response.Reply.Result == "OK"
    reply = received_body(history)
    stamps = reply.xpath("//mr:IntervalReadings/mr:timeStamp/text()", namespaces=M)
    assert len(stamps) == 96
    assert datetime.fromisoformat(stamps[0]) == START + timedelta(minutes=15)
    block = response.Payload.MeterReadings.MeterReading[0].IntervalBlocks[0]
    assert len(block.IntervalReadings) == 96


def test_get_meter_readings_for_an_unknown_meter(server: Server) -> None:
    client, history = zeep_client(server, "GetMeterReadings")
    response = client.service.GetMeterReadings(
        Header=header("get", "MeterReadings"),
        Request={"GetMeterReadings": {"EndDevice": [{"mRID": "MTR-1"}, {"mRID": "GHOST-9"}]}},
    )
    assert response.Reply.Result == "PARTIAL"
    assert [(e.code, e.ID._value_1) for e in response.Reply.Error] == [("2001", "GHOST-9")]
    received_body(history)
    response = client.service.GetMeterReadings(
        Header=header("get", "MeterReadings"),
        Request={"GetMeterReadings": {"EndDevice": [{"Names": [{"name": "nobody"}]}]}},
    )
    assert response.Reply.Result == "FAILED"
    assert [(e.code, e.ID._value_1, e.ID.kind, e.ID.objectType) for e in response.Reply.Error] == [
        ("2001", "nobody", "name", "EndDevice")
    ]
    received_body(history)


def test_execute_master_data_services(server: Server) -> None:
    ups = [{"mrid": "UP-NEW-1", "name": "New street 1"}]
    devices = [{"mrid": "MTR-NEW-1", "serial": "SN-NEW-1"}]
    calls = [
        (
            "ExecuteUsagePointConfig",
            "CreateUsagePointConfig",
            usage_point_config("create", ups, style="wrapper"),
        ),
        (
            "ExecuteMeterConfig",
            "CreateMeterConfig",
            meter_config("create", devices, style="wrapper"),
        ),
        (
            "ExecuteMasterDataLinkageConfig",
            "CreateMasterDataLinkageConfig",
            linkage("create", "MTR-NEW-1", "UP-NEW-1", START, style="wrapper"),
        ),
    ]
    for service, operation, body in calls:
        client, history = zeep_client(server, service)
        parts = wrapper_parts(client, etree.fromstring(body))
        response = getattr(client.service, operation)(**parts)
        assert response.Reply.Result == "OK", (service, response.Reply)
        received_body(history)
    with server.app.uow_factory() as uow:
        device = uow.devices.find(1, __import__("mdm.model").model.DeviceRef(mrid="MTR-NEW-1"))
        assert device is not None
        assert device.id is not None
        assert uow.installations.current(device.id) is not None


def test_controls_schedules_and_events_services(server: Server) -> None:
    """Without a head-end configured, controls and read schedules answer a clear FAILED
    (1011); GetEndDeviceEvents answers from the store."""
    controls = render_end_device_controls(
        EndDeviceControls(
            (EndDeviceControl("3.31.0.23", end_devices=(IdentifiedObject("MTR-1"),)),)
        )
    )
    schedule = render_meter_read_schedule(
        MeterReadSchedule(end_devices=(IdentifiedObject("MTR-1"),))
    )
    cases = [
        (
            "ExecuteEndDeviceControls",
            "CreateEndDeviceControls",
            "create",
            "EndDeviceControls",
            controls,
        ),
        (
            "ExecuteMeterReadSchedule",
            "CreateMeterReadSchedule",
            "create",
            "MeterReadSchedule",
            schedule,
        ),
        ("GetEndDeviceEvents", "GetEndDeviceEvents", "get", "EndDeviceEvents", None),
    ]
    for service, operation, verb, noun, payload in cases:
        client, history = zeep_client(server, service)
        parts: dict[str, object] = {"Header": header(verb, noun)}
        if payload is not None:
            element = client.get_element(f"{{{etree.QName(payload).namespace}}}{noun}")
            parts["Payload"] = {noun: element.parse(payload, client.wsdl.types)}
        else:
            parts["Request"] = {
                "StartTime": datetime(2026, 3, 1, tzinfo=UTC),
                "EndTime": datetime(2026, 3, 2, tzinfo=UTC),
            }
        response = getattr(client.service, operation)(**parts)
        if service == "GetEndDeviceEvents":
            assert response.Reply.Result == "OK", response.Reply
        else:
            assert response.Reply.Result == "FAILED"
            assert response.Reply.Error[0].code == "1011", response.Reply
            assert noun in response.Reply.Error[0].reason
        received_body(history)
