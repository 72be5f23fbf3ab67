"""ExecuteEndDeviceGroups answers a real zeep client over real HTTP."""

from __future__ import annotations

from lxml import etree

from hub.samples import end_device_groups, meter_config
from mdm.model import DeviceRef
from tests.integration.soap.conftest import Server, received_body, wrapper_parts, zeep_client


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
