"""ExecuteEndDeviceGroups, and GetMeterReadings naming a group, answer a real zeep
client over real HTTP."""

from __future__ import annotations

from datetime import datetime, timedelta

from lxml import etree

from cim_schemas.namespaces import profile_ns
from hub.samples import end_device_groups, meter_config
from mdm.model import DeviceRef
from tests.integration.soap.conftest import (
    Server,
    header,
    received_body,
    wrapper_parts,
    zeep_client,
)
from tests.integration.soap.test_services import _load_readings
from tests.unit.hub.conftest import START

MR = {"mr": profile_ns("MeterReadings")}


def test_execute_end_device_groups(server: Server) -> None:
    devices = [{"mrid": "MTR-G-1", "serial": "SN-G-1"}, {"mrid": "MTR-G-2", "serial": "SN-G-2"}]
    calls = [
        (
            "ExecuteMeterConfig",
            "CreateMeterConfig",
            meter_config("create", devices, style="wrapper"),
        ),
        (
            "ExecuteEndDeviceGroups",
            "CreateEndDeviceGroups",
            end_device_groups(
                "create",
                [{"mrid": "G-SOAP", "name": "soap group", "devices": ["MTR-G-1", "MTR-G-2"]}],
                style="wrapper",
            ),
        ),
        (
            "ExecuteEndDeviceGroups",
            "ChangeEndDeviceGroups",
            end_device_groups(
                "change", [{"mrid": "G-SOAP", "devices": ["MTR-G-2"]}], style="wrapper"
            ),
        ),
    ]
    for service, operation, body in calls:
        client, history = zeep_client(server, service)
        parts = wrapper_parts(client, etree.fromstring(body))
        response = getattr(client.service, operation)(**parts)
        assert response.Reply.Result == "OK", (service, response.Reply)
        received_body(history)
    client, _ = zeep_client(server, "ExecuteEndDeviceGroups")
    parts = wrapper_parts(
        client,
        etree.fromstring(
            end_device_groups(
                "create", [{"mrid": "G-BAD", "devices": ["MTR-NOPE"]}], style="wrapper"
            )
        ),
    )
    refused = client.service.CreateEndDeviceGroups(**parts)
    assert refused.Reply.Result == "FAILED"
    assert [(e.code, e.ID._value_1 if e.ID is not None else None) for e in refused.Reply.Error] == [
        ("2001", "MTR-NOPE")
    ]
    with server.app.uow_factory() as uow:
        group = uow.end_device_groups.find(1, DeviceRef(mrid="G-SOAP"))
        assert group is not None
        assert group.id is not None
        assert uow.end_device_groups.members(group.id) == ["MTR-G-2"]


def test_get_meter_readings_of_an_end_device_group(server: Server) -> None:
    """The group's members' readings; an unknown group is a 2015 Error (PARTIAL)."""
    _load_readings(server)  # MTR-1 and MTR-2, two days
    client, history = zeep_client(server, "ExecuteEndDeviceGroups")
    parts = wrapper_parts(
        client,
        etree.fromstring(
            end_device_groups(
                "create",
                [{"mrid": "G-READ", "name": "soap readers", "devices": ["MTR-2"]}],
                style="wrapper",
            )
        ),
    )
    assert client.service.CreateEndDeviceGroups(**parts).Reply.Result == "OK"
    client, history = zeep_client(server, "GetMeterReadings")
    response = client.service.GetMeterReadings(
        Header=header("get", "MeterReadings"),
        Request={
            "GetMeterReadings": {
                "EndDeviceGroup": [{"Names": [{"name": "soap readers"}]}, {"mRID": "G-NONE"}],
                "TimeSchedule": [
                    {"scheduleInterval": {"end": START + timedelta(days=1), "start": START}}
                ],
            }
        },
    )
    assert response.Reply.Result == "PARTIAL"
    assert [
        (e.code, e.ID._value_1, e.ID.kind, e.ID.objectType, e.details, e.xpath)
        for e in response.Reply.Error
    ] == [
        (
            "2015",
            "G-NONE",
            "uuid",
            "EndDeviceGroup",
            "/GetMeterReadings/Request/GetMeterReadings/EndDeviceGroup[2]",
            None,
        )
    ]
    [reading] = response.Payload.MeterReadings.MeterReading
    assert reading.Meter.mRID == "MTR-2"
    assert len(reading.IntervalBlocks[0].IntervalReadings) == 96
    reply = received_body(history)  # valid against our XSDs
    stamps = reply.xpath("//mr:IntervalReadings/mr:timeStamp/text()", namespaces=MR)
    assert datetime.fromisoformat(stamps[0]) == START + timedelta(minutes=15)
