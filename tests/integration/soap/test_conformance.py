"""A CIS built against the standard's WSDLs works unchanged (issue 12, points 1-6).

Each test goes through the real interface: SOAP over HTTP to a running amihub, with
zeep, or raw HTTP where zeep cannot express the case (another implementation's
soapAction, a client that sends credentials only when challenged).
"""

from __future__ import annotations

import urllib.error
import urllib.request
import uuid
from collections.abc import Callable

import pytest
from lxml import etree

from hub.samples import meter_config
from tests.integration.soap.conftest import SOAP_ENV, Server
from tests.integration.soap.test_bad_input import envelope, fault_of, get_body, post

MSG = "http://iec.ch/TC57/2011/schema/message"


def _result(response_content: bytes) -> str:
    root = etree.fromstring(response_content)
    body = root.find(f"{{{SOAP_ENV}}}Body")
    assert body is not None
    return body[0].findtext(f".//{{{MSG}}}Result") or ""


# -- 1. soapAction: ours (.../<Service>/<Operation>) and the standard's (.../<Noun>/<Operation>)


@pytest.mark.parametrize(
    "action",
    [
        "http://iec.ch/TC57/2011/ExecuteMeterConfig/CreateMeterConfig",  # ours
        "http://iec.ch/TC57/2011/MeterConfig/CreateMeterConfig",  # other 61968-9 stacks
    ],
)
def test_soap_action_of_either_form_is_accepted(server: Server, action: str) -> None:
    body = meter_config(
        "create", [{"mrid": f"MTR-{uuid.uuid4().hex[:8]}", "serial": "SN1"}], style="wrapper"
    )
    response = post(server, envelope(body), service="ExecuteMeterConfig", action=action)
    assert response.status_code == 200, response.content[:500]
    assert _result(response.content) == "OK"


@pytest.mark.parametrize(
    "action",
    [
        "http://iec.ch/TC57/2011/MeterConfig/DeleteMeterConfig",
        "http://iec.ch/TC57/2011/ExecuteMeterConfig/ChangeMeterConfig",
        "http://iec.ch/TC57/2011/MeterConfig/CreateMeterConfig/extra",
    ],
)
def test_soap_action_naming_another_operation_is_refused(server: Server, action: str) -> None:
    body = meter_config("create", [{"mrid": "MTR-X", "serial": "SNX"}], style="wrapper")
    response = post(server, envelope(body), service="ExecuteMeterConfig", action=action)
    assert response.status_code == 500
    code, text, errors = fault_of(response)
    assert code.endswith("Client")
    assert errors[0][0] == "1006"
    assert "CreateMeterConfig" in text


# -- 5. no credentials: HTTP 401 + WWW-Authenticate, so a challenge-answering client works


def test_a_call_without_credentials_is_challenged(server: Server) -> None:
    response = post(server, envelope(get_body()), auth=None)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Basic realm="amihub"'
    _, _, errors = fault_of(response)  # the SOAP Fault body, as before
    assert errors[0][0] == "1010"


def test_a_client_that_answers_the_challenge_works(server: Server) -> None:
    """urllib's HTTPBasicAuthHandler sends credentials only after a 401 challenge."""

    def call(password: str) -> bytes:
        passwords = urllib.request.HTTPPasswordMgrWithDefaultRealm()
        passwords.add_password(None, server.url, "cis", password)
        challenged: list[int] = []

        class Handler(urllib.request.HTTPBasicAuthHandler):
            def http_error_401(self, req, fp, code, msg, headers):  # type: ignore[no-untyped-def]
                challenged.append(code)
                try:
                    answer = super().http_error_401(req, fp, code, msg, headers)
                except urllib.error.HTTPError as final:
                    if final.fp is not fp:
                        fp.close()
                    raise
                if answer is not None and answer is not fp:
                    fp.close()  # the 401 answered by a retry
                return answer

        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), Handler(passwords))
        request = urllib.request.Request(
            server.endpoint("GetMeterReadings"),
            data=envelope(get_body()),
            headers={
                "Content-Type": "text/xml; charset=utf-8",
                "SOAPAction": '"http://iec.ch/TC57/2011/GetMeterReadings/GetMeterReadings"',
            },
        )
        assert request.get_header("Authorization") is None  # nothing sent up front
        with opener.open(request, timeout=10) as answer:
            assert answer.status == 200
            assert challenged == [401]  # the credentials went with the second attempt
            return bytes(answer.read())

    assert _result(call("cis-secret")) == "OK"
    # wrong credentials are challenged again until the client gives up
    with pytest.raises(urllib.error.HTTPError) as refused:
        call("wrong")
    assert refused.value.code == 401
    with refused.value:
        fault = etree.fromstring(refused.value.read()).find(f".//{{{SOAP_ENV}}}Fault")
    assert fault is not None
    assert "1010" in (fault.findtext("faultstring") or "")


# -- 4. every FAILED / PARTIAL reply validates against the official envelope schema ---------

MR_MSG = "http://iec.ch/TC57/2011/MeterReadingsMessage"
MR = "http://iec.ch/TC57/2011/MeterReadings#"


def _created_readings(meter: str) -> str:
    return (
        f'<w:CreatedMeterReadings xmlns:w="{MR_MSG}" xmlns:m="{MSG}" xmlns:r="{MR}">'
        "<w:Header><m:Verb>created</m:Verb><m:Noun>MeterReadings</m:Noun>"
        f"<m:MessageID>{uuid.uuid4()}</m:MessageID></w:Header>"
        "<w:Payload><r:MeterReadings><r:MeterReading>"
        f"<r:Meter><r:mRID>{meter}</r:mRID></r:Meter><r:Readings>"
        "<r:timeStamp>2026-03-01T00:00:00Z</r:timeStamp><r:value>1.5</r:value>"
        '<r:ReadingType ref="0.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0"/></r:Readings>'
        "</r:MeterReading></r:MeterReadings></w:Payload></w:CreatedMeterReadings>"
    )


def _failures() -> list[tuple[str, str, str, str | bytes]]:
    """(case, service, operation, body) of calls answered FAILED, PARTIAL or with a Fault."""
    from datetime import UTC, datetime

    from hub.samples import end_device_controls, end_device_groups

    day = datetime(2026, 3, 1, tzinfo=UTC)
    gmr = "GetMeterReadings"
    devices = (
        "<p:EndDevice><p:mRID>MTR-1</p:mRID></p:EndDevice>"
        "<p:EndDevice><p:mRID>GHOST</p:mRID></p:EndDevice>"
        "<p:EndDevice><p:Names><p:name>nobody</p:name>"
        "<p:NameType><p:name>MeterUniqueID</p:name></p:NameType></p:Names></p:EndDevice>"
        "<p:EndDeviceGroup><p:mRID>NO-GROUP</p:mRID></p:EndDeviceGroup>"
        "<p:UsagePoint><p:mRID>NO-UP</p:mRID></p:UsagePoint>"
    )
    return [
        ("2001/2002/2015 PARTIAL", gmr, gmr, get_body(devices=devices)),
        (
            "2001 FAILED",
            gmr,
            gmr,
            get_body(devices="<p:EndDevice><p:mRID>X</p:mRID></p:EndDevice>"),
        ),
        ("1005 Fault", gmr, gmr, get_body(devices="<p:EndDevice><p:colour/></p:EndDevice>")),
        (
            "1008 Fault",
            gmr,
            gmr,
            get_body(extra_header="<m:Timestamp>2026-03-01T00:00:00</m:Timestamp>"),
        ),
        (
            "2001 created readings",
            "ReceiveMeterReadings",
            "CreatedMeterReadings",
            _created_readings("GHOST"),
        ),
        (
            "2001 delete unknown meter",
            "ExecuteMeterConfig",
            "DeleteMeterConfig",
            meter_config("delete", [{"mrid": "GHOST"}], style="wrapper"),
        ),
        (
            "2008 delete unknown group",
            "ExecuteEndDeviceGroups",
            "DeleteEndDeviceGroups",
            end_device_groups("delete", [{"mrid": "NO-G"}], style="wrapper"),
        ),
        (
            "2007 create existing meter",
            "ExecuteMeterConfig",
            "CreateMeterConfig",
            meter_config("create", [{"mrid": "MTR-1"}], style="wrapper"),
        ),
        (
            "1011 no head-end",
            "ExecuteEndDeviceControls",
            "CreateEndDeviceControls",
            end_device_controls(
                "create",
                [{"type": "3.31.0.23", "devices": ["MTR-1"], "start": day}],
                style="wrapper",
            ),
        ),
        (
            "2001 group of unknown meters",
            "ExecuteEndDeviceGroups",
            "CreateEndDeviceGroups",
            end_device_groups("create", [{"mrid": "G-1", "devices": ["GHOST"]}], style="wrapper"),
        ),
    ]


def test_every_failed_or_partial_reply_validates_with_xpath_as_qname(server: Server) -> None:
    from cim_schemas import schemas

    seen: set[str] = set()
    for case, service, operation, body in _failures():
        response = post(
            server,
            envelope(body),
            service=service,
            action=f"http://iec.ch/TC57/2011/{service}/{operation}",
        )
        root = etree.fromstring(response.content)
        answer = root.find(f"{{{SOAP_ENV}}}Body")
        assert answer is not None
        element = answer[0]
        if element.tag == f"{{{SOAP_ENV}}}Fault":
            detail = element.find("detail")
            assert detail is not None, case
            element = detail[0]
        standalone = etree.fromstring(etree.tostring(element))
        assert schemas.validate(standalone) == [], case  # our Message.xsd: xpath is xs:QName
        result = standalone.findtext(f".//{{{MSG}}}Result")
        assert result in ("PARTIAL", "FAILED"), (case, response.content[:800])
        errors = standalone.findall(f".//{{{MSG}}}Error")
        assert errors, case
        for error in errors:
            seen.add(error.findtext(f"{{{MSG}}}code") or "")
            assert error.find(f"{{{MSG}}}xpath") is None, case
            found = error.find(f"{{{MSG}}}ID")
            if found is not None:  # the failed object, with its kind and class
                assert found.get("kind") in ("uuid", "name"), case
                assert found.get("objectType"), case
    assert {"1005", "1008", "1011", "2001", "2002", "2007", "2008", "2015"} <= seen, seen


def test_the_failed_object_and_its_path(server: Server) -> None:
    """Error/ID carries the object (kind, objectType, idType = its NameType) and
    Error/details the path where it was named."""
    devices = (
        "<p:EndDevice><p:mRID>MTR-1</p:mRID></p:EndDevice>"
        "<p:EndDevice><p:Names><p:name>nobody</p:name>"
        "<p:NameType><p:name>MeterUniqueID</p:name></p:NameType></p:Names></p:EndDevice>"
    )
    response = post(server, envelope(get_body(devices=devices)))
    [error] = etree.fromstring(response.content).iter(f"{{{MSG}}}Error")
    found = error.find(f"{{{MSG}}}ID")
    assert found is not None
    assert (found.text, found.get("kind"), found.get("objectType"), found.get("idType")) == (
        "nobody",
        "name",
        "EndDevice",
        "MeterUniqueID",
    )
    assert error.findtext(f"{{{MSG}}}details") == (
        "/GetMeterReadings/Request/GetMeterReadings/EndDevice[2]"
    )


def test_our_envelope_schema_types_error_xpath_as_qname() -> None:
    """As the official IEC 61968-100 Message.xsd: a path in Error/xpath is invalid."""
    from cim_schemas import schemas

    def fault(xpath: str) -> etree._Element:
        return etree.fromstring(
            f'<g:MeterReadingsFaultMessage xmlns:g="http://iec.ch/TC57/2011/GetMeterReadingsMessage"'
            f' xmlns:m="{MSG}"><g:Reply><m:Result>FAILED</m:Result><m:Error><m:code>2001</m:code>'
            f"<m:xpath>{xpath}</m:xpath></m:Error></g:Reply></g:MeterReadingsFaultMessage>"
        )

    assert schemas.validate(fault("m:EndDevice")) == []
    assert schemas.validate(fault("/GetMeterReadings/Request/EndDevice[2]")) != []


# -- 3. GetMeterReadings: every identification of the get profile -------------------------


def test_get_meter_readings_by_every_identification(server: Server) -> None:
    from datetime import timedelta

    from tests.integration.soap.conftest import header, received_body, zeep_client
    from tests.integration.soap.test_services import _load_readings
    from tests.unit.hub.conftest import START

    _load_readings(server, days=1)
    client, history = zeep_client(server, "GetMeterReadings")
    day = {"scheduleInterval": {"end": START + timedelta(days=1), "start": START}}

    def meters_read(request: dict[str, object]) -> tuple[str, list[str], list[tuple[str, ...]]]:
        response = client.service.GetMeterReadings(
            Header=header("get", "MeterReadings"),
            Request={"GetMeterReadings": {**request, "TimeSchedule": [day]}},
        )
        received_body(history)  # valid against our XSDs
        found = response.Payload.MeterReadings if response.Payload is not None else None
        read = [] if found is None else [r.Meter.mRID for r in found.MeterReading]
        errors = [
            (e.code, e.ID._value_1, e.ID.kind, e.ID.idType or "") for e in response.Reply.Error
        ]
        return response.Reply.Result, sorted(read), errors

    assert meters_read({"EndDevice": [{"serialNumber": "SN-MTR-1"}]}) == ("OK", ["MTR-1"], [])
    assert meters_read(
        {"EndDevice": [{"Names": [{"name": "name-MTR-2", "NameType": {"name": "MeterName"}}]}]}
    ) == ("OK", ["MTR-2"], [])
    assert meters_read(
        {"EndDevice": [{"Names": [{"name": "SN-MTR-2", "NameType": {"name": "SerialNumber"}}]}]}
    ) == ("OK", ["MTR-2"], [])
    assert meters_read({"EndDevice": [{"mRID": "MTR-1"}, {"serialNumber": "SN-MTR-2"}]}) == (
        "OK",
        ["MTR-1", "MTR-2"],
        [],
    )
    assert meters_read({"UsagePoint": [{"mRID": "UP-MTR-2"}]}) == ("OK", ["MTR-2"], [])
    assert meters_read({"EndDevice": [{"serialNumber": "SN-NONE"}]}) == (
        "FAILED",
        [],
        [("2001", "SN-NONE", "name", "serialNumber")],
    )


# -- 2. GetEndDeviceEvents in the GetEndDeviceEventsMessage namespace (and the old one) ----

GEDE = "http://iec.ch/TC57/2011/GetEndDeviceEventsMessage"
EDE = "http://iec.ch/TC57/2011/EndDeviceEventsMessage"


def test_get_end_device_events_answers_in_the_namespace_of_the_request(server: Server) -> None:
    from datetime import UTC, datetime, timedelta

    from cim_schemas import schemas
    from hub.samples import end_device_events
    from tests.integration.soap.conftest import header, received_body, zeep_client

    at = datetime(2026, 3, 1, 12, tzinfo=UTC)
    stored = post(
        server,
        envelope(
            end_device_events(
                "created",
                [
                    {"meter": "MTR-1", "type": "3.26.0.85", "at": at, "mrid": "EV-1"},
                    {"meter": "MTR-2", "type": "3.26.0.85", "at": at, "mrid": "EV-2"},
                ],
                style="wrapper",
            )
        ),
        service="ReceiveEndDeviceEvents",
        action="http://iec.ch/TC57/2011/ReceiveEndDeviceEvents/CreatedEndDeviceEvents",
    )
    assert _result(stored.content) == "OK", stored.content[:600]

    # a zeep client of our WSDL, which has the IEC names: GetEndDeviceEventsMessage
    client, history = zeep_client(server, "GetEndDeviceEvents")
    answer = client.service.GetEndDeviceEvents(
        Header=header("get", "EndDeviceEvents"),
        Request={"StartTime": at - timedelta(hours=1), "EndTime": at + timedelta(hours=1)},
    )
    assert answer.Reply.Result == "OK"
    reply = received_body(history)  # valid against our XSDs
    assert reply.tag == f"{{{GEDE}}}EndDeviceEventsResponseMessage"
    assert sorted(e.mRID for e in answer.Payload.EndDeviceEvents.EndDeviceEvent) == ["EV-1", "EV-2"]

    def raw(namespace: str, request: str) -> etree._Element:
        body = (
            f'<w:GetEndDeviceEvents xmlns:w="{namespace}" xmlns:m="{MSG}">'
            "<w:Header><m:Verb>get</m:Verb><m:Noun>EndDeviceEvents</m:Noun>"
            f"<m:MessageID>{uuid.uuid4()}</m:MessageID></w:Header>"
            f"<w:Request>{request}</w:Request></w:GetEndDeviceEvents>"
        )
        response = post(
            server,
            envelope(body),
            service="GetEndDeviceEvents",
            action="http://iec.ch/TC57/2011/EndDeviceEvents/GetEndDeviceEvents",
        )
        found = etree.fromstring(response.content).find(f"{{{SOAP_ENV}}}Body")
        assert found is not None
        element = etree.fromstring(etree.tostring(found[0]))
        assert schemas.validate(element) == []
        return element

    period = (
        "<m:StartTime>2026-03-01T11:00:00Z</m:StartTime><m:EndTime>2026-03-01T13:00:00Z</m:EndTime>"
    )
    for namespace in (GEDE, EDE):  # each answered in its own namespace
        element = raw(namespace, period)
        assert element.tag == f"{{{namespace}}}EndDeviceEventsResponseMessage"
        assert len(element.findall(".//{*}EndDeviceEvent")) == 2
    # the standard's Get profile inside Request: one meter, its TimeSchedule
    profile = (
        '<g:GetEndDeviceEvents xmlns:g="http://iec.ch/TC57/2011/GetEndDeviceEvents#">'
        "<g:EndDevice><g:mRID>MTR-2</g:mRID></g:EndDevice><g:TimeSchedule><g:scheduleInterval>"
        "<g:end>2026-03-01T13:00:00Z</g:end><g:start>2026-03-01T11:00:00Z</g:start>"
        "</g:scheduleInterval></g:TimeSchedule></g:GetEndDeviceEvents>"
    )
    element = raw(GEDE, profile)
    assert [e.findtext("{*}mRID") for e in element.iterfind(".//{*}EndDeviceEvent")] == ["EV-2"]
    # a fault (here: not authorised) answers in the request's namespace as well
    refused = post(
        server,
        envelope(
            f'<w:GetEndDeviceEvents xmlns:w="{GEDE}" xmlns:m="{MSG}"><w:Header>'
            "<m:Verb>get</m:Verb><m:Noun>EndDeviceEvents</m:Noun></w:Header></w:GetEndDeviceEvents>"
        ),
        service="GetEndDeviceEvents",
        action="http://iec.ch/TC57/2011/GetEndDeviceEvents/GetEndDeviceEvents",
        auth=("cis", "wrong"),
    )
    detail = etree.fromstring(refused.content).find(f".//{{{SOAP_ENV}}}Fault/detail")
    assert detail is not None
    assert detail[0].tag == f"{{{GEDE}}}EndDeviceEventsFaultMessage"


# -- 6. nothing that arrives is dropped: qualities' notes, reasons, the value's text ------

RT15 = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
RT_REGISTER = "0.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0"


def _readings_with_notes() -> str:
    return (
        f'<w:CreatedMeterReadings xmlns:w="{MR_MSG}" xmlns:m="{MSG}" xmlns:r="{MR}">'
        "<w:Header><m:Verb>created</m:Verb><m:Noun>MeterReadings</m:Noun>"
        f"<m:MessageID>{uuid.uuid4()}</m:MessageID></w:Header>"
        "<w:Payload><r:MeterReadings><r:MeterReading><r:IntervalBlocks>"
        "<r:IntervalReadings><r:timeStamp>2026-03-01T00:15:00Z</r:timeStamp>"
        "<r:value>0.2250</r:value></r:IntervalReadings>"
        "<r:IntervalReadings><r:timeStamp>2026-03-01T00:30:00Z</r:timeStamp>"
        "<r:value>1.50</r:value>"
        '<r:ReadingQualities><r:comment>gap filled, "linear" &amp; checked</r:comment>'
        "<r:source>MDM-7</r:source><r:timeStamp>2026-03-01T01:00:00+01:00</r:timeStamp>"
        '<r:ReadingQualityType ref="3.8.0"/></r:ReadingQualities>'
        '<r:ReadingQualities><r:ReadingQualityType ref="1.4.9"/></r:ReadingQualities>'
        "</r:IntervalReadings>"
        "<r:IntervalReadings><r:timeStamp>2026-03-01T00:45:00Z</r:timeStamp>"
        "<r:value>12</r:value></r:IntervalReadings>"
        f'<r:ReadingType ref="{RT15}"/></r:IntervalBlocks>'
        "<r:Meter><r:mRID>MTR-1</r:mRID></r:Meter>"
        "<r:Readings><r:reason>billing</r:reason>"
        "<r:timeStamp>2026-03-01T00:00:00Z</r:timeStamp><r:value>6519.0950</r:value>"
        '<r:ReadingQualities><r:source>HES</r:source><r:ReadingQualityType ref="3.0.1"/>'
        f'</r:ReadingQualities><r:ReadingType ref="{RT_REGISTER}"/></r:Readings>'
        "</r:MeterReading></r:MeterReadings></w:Payload></w:CreatedMeterReadings>"
    )


def _get_day(server: Server) -> etree._Element:
    from cim_schemas import schemas

    get = get_body(
        devices="<p:EndDevice><p:mRID>MTR-1</p:mRID></p:EndDevice>"
        "<p:TimeSchedule><p:scheduleInterval><p:end>2026-03-02T00:00:00Z</p:end>"
        "<p:start>2026-02-28T00:00:00Z</p:start></p:scheduleInterval></p:TimeSchedule>"
    )
    response = post(server, envelope(get))
    body = etree.fromstring(response.content).find(f"{{{SOAP_ENV}}}Body")
    assert body is not None
    reply = etree.fromstring(etree.tostring(body[0]))
    assert schemas.validate(reply) == []
    return reply


def _shape(reply: etree._Element) -> list[tuple[str | None, ...]]:
    """Every reading of the reply with what came with it."""
    out: list[tuple[str | None, ...]] = []
    for el in reply.iter(f"{{{MR}}}IntervalReadings", f"{{{MR}}}Readings"):
        qualities = [
            (
                q.findtext(f"{{{MR}}}comment"),
                q.findtext(f"{{{MR}}}source"),
                q.findtext(f"{{{MR}}}timeStamp"),
                q.find(f"{{{MR}}}ReadingQualityType").get("ref"),  # type: ignore[union-attr]
            )
            for q in el.iterfind(f"{{{MR}}}ReadingQualities")
        ]
        out.append(
            (
                el.findtext(f"{{{MR}}}reason"),
                el.findtext(f"{{{MR}}}timeStamp"),
                el.findtext(f"{{{MR}}}value"),
                repr(qualities),
            )
        )
    return out


EXPECTED_SHAPE = [
    (None, "2026-03-01T00:15:00+00:00", "0.2250", "[]"),
    (
        None,
        "2026-03-01T00:30:00+00:00",
        "1.50",
        repr(
            [
                ('gap filled, "linear" & checked', "MDM-7", "2026-03-01T01:00:00+01:00", "3.8.0"),
                (None, None, None, "1.4.9"),
            ]
        ),
    ),
    (None, "2026-03-01T00:45:00+00:00", "12", "[]"),
    (
        "billing",
        "2026-03-01T00:00:00+00:00",
        "6519.0950",
        repr([(None, "HES", None, "3.0.1")]),
    ),
]


def _exported(server: Server) -> list[str]:
    """The store's readings through a mappings export naming every field of a reading."""
    import io

    from mappings.export import rows_from_store, write_export
    from mappings.load import parse_spec_text
    from mappings.spec import ExportCsvSpec
    from tests.unit.mappings.test_mappings_export import NOTES_EXPORT

    spec, _ = parse_spec_text(NOTES_EXPORT, "export-notes")
    assert isinstance(spec, ExportCsvSpec)
    out = io.BytesIO()
    with server.app.uow_factory() as uow:
        rows = rows_from_store(
            uow,
            server.app.settings.default_utility,
            usage_points=["UP-MTR-1"],
            start=None,
            end=None,
        )
        write_export(spec, rows, out, tables={})
    return out.getvalue().decode().splitlines()[1:]


@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_notes_reasons_and_value_texts_come_back(
    request: pytest.FixtureRequest, soap_server_factory: Callable[..., Server], store: str
) -> None:
    url = request.getfixturevalue("postgres_url") if store == "postgres" else None
    server = soap_server_factory(database_url=url)
    sent = post(
        server,
        envelope(_readings_with_notes()),
        service="ReceiveMeterReadings",
        action="http://iec.ch/TC57/2011/ReceiveMeterReadings/CreatedMeterReadings",
    )
    assert _result(sent.content) == "OK", sent.content[:800]
    assert _shape(_get_day(server)) == EXPECTED_SHAPE
    assert _exported(server)[:3] == [
        "MTR-1;0.2250;;;;;;N",
        'MTR-1;1.50;3.8.0,1.4.9;"gap filled, ""linear"" & checked,";MDM-7,;'
        "2026-03-01T01:00:00+01:00,;;J",
        "MTR-1;12;;;;;;N",
    ]
    # the same message again changes nothing; 1.5 for 1.50 neither (the same number)
    again = post(
        server,
        envelope(
            _readings_with_notes().replace("<r:value>1.50</r:value>", "<r:value>1.5</r:value>")
        ),
        service="ReceiveMeterReadings",
        action="http://iec.ch/TC57/2011/ReceiveMeterReadings/CreatedMeterReadings",
    )
    assert _result(again.content) == "OK"
    assert _shape(_get_day(server)) == EXPECTED_SHAPE
    # a changed note is a new version, as a changed quality code
    changed = post(
        server,
        envelope(_readings_with_notes().replace("MDM-7", "MDM-8")),
        service="ReceiveMeterReadings",
        action="http://iec.ch/TC57/2011/ReceiveMeterReadings/CreatedMeterReadings",
    )
    assert _result(changed.content) == "OK"
    shape = _shape(_get_day(server))
    assert "MDM-8" in shape[1][3]
    with server.app.uow_factory() as uow:
        utility = uow.utilities.get(server.app.settings.default_utility)
        assert utility is not None
        assert utility.id is not None
        from mdm.model import DeviceRef

        device = uow.devices.find(utility.id, DeviceRef(mrid="MTR-1"))
        assert device is not None
        assert device.id is not None
        from datetime import UTC, datetime

        versions = uow.readings.versions(device.id, RT15, datetime(2026, 3, 1, 0, 30, tzinfo=UTC))
    assert [v.version for v in versions] == [2, 1]
    assert "MDM-7" in versions[1].quality


def test_head_end_events_carry_the_notes() -> None:
    """created MeterReadings of the head-end (AMQP, SFTP, SOAP subscribers) are built from
    stored quality texts: their notes and a register's reason come along."""
    from datetime import UTC, datetime
    from decimal import Decimal

    from cim_schemas.meter_readings import render_readings
    from hub.headend import reply_rows
    from hub.readings_codec import STORED_QUALITIES
    from mdm.qualities import Quality, pack

    at = datetime(2026, 3, 1, tzinfo=UTC)
    quality = pack([Quality("3.8.0", "filled", "MDM", "2026-03-01T01:00:00Z")], "billing")
    rows = [(RT_REGISTER, at, Decimal("6519.0950"), quality), (RT15, at, Decimal("1"), "")]
    element, count = render_readings(reply_rows("MTR-1", rows), STORED_QUALITIES)
    assert count == 2
    register = element.find(f".//{{{MR}}}Readings")
    assert register is not None
    assert register.findtext(f"{{{MR}}}reason") == "billing"
    assert register.findtext(f"{{{MR}}}value") == "6519.0950"
    rq = register.find(f"{{{MR}}}ReadingQualities")
    assert rq is not None
    assert [rq.findtext(f"{{{MR}}}{t}") for t in ("comment", "source")] == ["filled", "MDM"]
    assert rq.findtext(f"{{{MR}}}timeStamp") is not None
