"""suds (suds-community), a SOAP client amihub does not use, against the real server: it
reads our WSDL over HTTP, builds the requests from it and parses the replies, beside the
zeep tests. WS-Security UsernameToken, as a CIS configured for it sends."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from suds.client import Client
from suds.wsse import Security, UsernameToken

from hub.messages import InboundMessage
from hub.samples import meter_readings_bytes
from mdm.model import DeviceRef
from tests.integration.soap.conftest import Server
from tests.unit.hub.conftest import START


def suds_client(server: Server, service: str) -> Client:
    client = Client(server.wsdl(service), cache=None, timeout=30)
    security = Security()
    security.tokens.append(UsernameToken("cis", "cis-secret"))
    client.set_options(wsse=security)
    return client


def header(verb: str, noun: str) -> dict[str, Any]:
    return {
        "Verb": verb,
        "Noun": noun,
        "Timestamp": datetime.now(UTC).replace(microsecond=0),
        "Source": "suds",
        "MessageID": str(uuid.uuid4()),
    }


def test_get_meter_readings_through_suds(server: Server) -> None:
    outcome = server.app.pipeline.process(
        InboundMessage(
            source="tests", endpoint="tests", body=meter_readings_bytes(["MTR-1"], START, 96)
        )
    )
    assert outcome.result == "OK"
    client = suds_client(server, "GetMeterReadings")
    sent = header("get", "MeterReadings")
    reply = client.service.GetMeterReadings(
        Header=sent,
        Request={
            "GetMeterReadings": {
                "EndDevice": [{"mRID": "MTR-1"}, {"mRID": "GHOST-9"}],
                "TimeSchedule": [
                    {"scheduleInterval": {"start": START, "end": START + timedelta(days=1)}}
                ],
            }
        },
    )
    assert reply.Header.Verb == "reply"
    assert reply.Header.CorrelationID == sent["MessageID"]
    assert reply.Reply.Result == "PARTIAL"
    [error] = reply.Reply.Error
    assert (error.code, str(getattr(error.ID, "value", error.ID))) == ("2001", "GHOST-9")
    [reading] = reply.Payload.MeterReadings.MeterReading
    assert reading.Meter.mRID == "MTR-1"
    [block] = reading.IntervalBlocks
    assert len(block.IntervalReadings) == 96
    assert block.IntervalReadings[0].timeStamp == START + timedelta(minutes=15)


def test_create_meter_config_through_suds(server: Server) -> None:
    client = suds_client(server, "ExecuteMeterConfig")
    reply = client.service.CreateMeterConfig(
        Header=header("create", "MeterConfig"),
        Payload={"MeterConfig": {"Meter": [{"mRID": "MTR-SUDS", "serialNumber": "SN-SUDS"}]}},
    )
    assert reply.Reply.Result == "OK"
    again = client.service.CreateMeterConfig(
        Header=header("create", "MeterConfig"),
        Payload={"MeterConfig": {"Meter": [{"mRID": "MTR-SUDS", "serialNumber": "SN-SUDS"}]}},
    )
    assert again.Reply.Result == "FAILED"
    assert [e.code for e in again.Reply.Error] == ["2007"]  # already exists
    with server.app.uow_factory() as uow:
        utility = uow.utilities.get(server.app.settings.default_utility)
        assert utility is not None
        assert utility.id is not None
        device = uow.devices.find(utility.id, DeviceRef(mrid="MTR-SUDS"))
    assert device is not None
    assert device.serial_number == "SN-SUDS"
