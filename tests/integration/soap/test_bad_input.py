"""Bad input over real HTTP: a SOAP Fault naming what is wrong; the server stays up."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import requests
from lxml import etree

from cim_schemas.envelope import parse_reply
from tests.integration.soap.conftest import SOAP_ENV, Server, header, zeep_client

GMR = "http://iec.ch/TC57/2011/GetMeterReadingsMessage"
MSG = "http://iec.ch/TC57/2011/schema/message"
GET_ACTION = "http://iec.ch/TC57/2011/GetMeterReadings/GetMeterReadings"


def get_body(
    extra_header: str = "", devices: str = "<p:EndDevice><p:mRID>MTR-1</p:mRID></p:EndDevice>"
) -> str:
    return (
        f'<g:GetMeterReadings xmlns:g="{GMR}" xmlns:m="{MSG}" '
        'xmlns:p="http://iec.ch/TC57/2011/GetMeterReadings#">'
        f"<g:Header><m:Verb>get</m:Verb><m:Noun>MeterReadings</m:Noun>{extra_header}"
        f"<m:MessageID>{uuid.uuid4()}</m:MessageID></g:Header>"
        f"<g:Request><p:GetMeterReadings>{devices}</p:GetMeterReadings></g:Request>"
        "</g:GetMeterReadings>"
    )


def envelope(body: str | bytes, prolog: str = "") -> bytes:
    if isinstance(body, bytes):
        body = body.decode()
        if body.startswith("<?xml"):
            body = body[body.index("?>") + 2 :]
    return (
        f'{prolog}<soapenv:Envelope xmlns:soapenv="{SOAP_ENV}"><soapenv:Body>{body}'
        "</soapenv:Body></soapenv:Envelope>"
    ).encode()


def post(
    server: Server,
    data: bytes,
    *,
    service: str = "GetMeterReadings",
    action: str = GET_ACTION,
    auth: tuple[str, str] | None = ("cis", "cis-secret"),
) -> requests.Response:
    return requests.post(
        server.endpoint(service),
        data=data,
        headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": f'"{action}"'},
        auth=auth,
        timeout=10,
    )


def fault_of(response: requests.Response) -> tuple[str, str, list[tuple[str, str | None]]]:
    """(faultcode, faultstring, [(Error code, the path in Error details)]) of a SOAP Fault
    answer (Error/xpath is an xs:QName in IEC 61968-100: the path is in details)."""
    root = etree.fromstring(response.content)
    fault = root.find(f"{{{SOAP_ENV}}}Body/{{{SOAP_ENV}}}Fault")
    assert fault is not None, response.content[:500]
    detail = fault.find("detail")
    assert detail is not None
    reply = detail[0].find(f"{{{etree.QName(detail[0]).namespace}}}Reply")
    assert reply is not None
    assert detail[0].find(f".//{{{MSG}}}xpath") is None
    errors = [(e.code, e.xpath) for e in parse_reply(reply).errors]
    return fault.findtext("faultcode") or "", fault.findtext("faultstring") or "", errors


def still_up(server: Server) -> None:
    client, _ = zeep_client(server, "GetMeterReadings")
    response = client.service.GetMeterReadings(
        Header=header("get", "MeterReadings"),
        Request={"GetMeterReadings": {"EndDevice": [{"mRID": "MTR-1"}]}},
    )
    assert response.Reply.Result == "OK"


def test_valid_raw_request_is_answered(server: Server) -> None:
    response = post(server, envelope(get_body()))
    assert response.status_code == 200, response.text
    assert b"MeterReadingsResponseMessage" in response.content


def test_schema_invalid_body_fault_names_the_xpath(server: Server) -> None:
    bad = get_body(devices="<p:EndDevice><p:colour>red</p:colour></p:EndDevice>")
    response = post(server, envelope(bad))
    assert response.status_code == 500
    code, text, errors = fault_of(response)
    assert code.endswith("Client")
    assert errors[0][0] == "1005"
    assert errors[0][1] == "/GetMeterReadings/Request/GetMeterReadings/EndDevice/colour"
    assert "EndDevice/colour" in text
    # the detail is our own MeterReadingsFaultMessage of the GetMeterReadings service
    detail = etree.fromstring(response.content).find(f".//{{{SOAP_ENV}}}Fault/detail")
    assert detail is not None
    assert detail[0].tag == f"{{{GMR}}}MeterReadingsFaultMessage"
    still_up(server)


def test_wrong_soap_action(server: Server) -> None:
    response = post(
        server, envelope(get_body()), action="http://iec.ch/TC57/2011/GetMeterReadings/Nope"
    )
    assert response.status_code == 500
    code, text, errors = fault_of(response)
    assert code.endswith("Client")
    assert errors[0][0] == "1006"
    assert GET_ACTION in text


def test_valid_envelope_for_the_wrong_service(server: Server) -> None:
    response = post(
        server,
        envelope(get_body()),
        service="ExecuteMeterConfig",
        action="http://iec.ch/TC57/2011/ExecuteMeterConfig/CreateMeterConfig",
    )
    assert response.status_code == 500
    _, text, errors = fault_of(response)
    assert errors[0][0] == "1006"
    assert "not an operation of ExecuteMeterConfig" in text
    assert errors[0][1] == "/Envelope/Body/GetMeterReadings"


def test_xxe_is_refused_and_nothing_is_read(server: Server, tmp_path: object) -> None:
    secret = tmp_path / "secret.txt"  # type: ignore[operator]
    secret.write_text("TOP-SECRET-VALUE")
    prolog = f'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file://{secret}">]>'
    response = post(server, envelope(get_body(extra_header="<m:Comment>&xxe;</m:Comment>"), prolog))
    assert response.status_code == 500
    _, _, errors = fault_of(response)
    assert errors[0][0] == "1002"
    assert b"TOP-SECRET-VALUE" not in response.content


def test_entity_expansion_bomb_is_refused_fast(server: Server) -> None:
    entities = '<!ENTITY a0 "lol">' + "".join(
        f'<!ENTITY a{i} "{("&a" + str(i - 1) + ";") * 10}">' for i in range(1, 10)
    )
    prolog = f"<?xml version='1.0'?><!DOCTYPE lolz [{entities}]>"
    started = time.perf_counter()
    response = post(server, envelope(get_body(extra_header="<m:Comment>&a9;</m:Comment>"), prolog))
    assert time.perf_counter() - started < 2
    _, _, errors = fault_of(response)
    assert errors[0][0] == "1002"
    still_up(server)


def test_not_xml_and_not_soap(server: Server) -> None:
    _, _, errors = fault_of(post(server, b"this is not xml"))
    assert errors[0][0] == "1001"
    _, _, errors = fault_of(post(server, get_body().encode()))
    assert errors[0][0] == "1004"


def test_oversize_body_is_refused_unread(server: Server) -> None:
    limit = server.service.settings.max_body_bytes
    padding = "<m:Comment>" + "x" * (limit + 10) + "</m:Comment>"
    response = post(server, envelope(get_body(extra_header=padding)))
    assert response.status_code == 413
    _, _, errors = fault_of(response)
    assert errors[0][0] == "1003"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while reading
        data = envelope(get_body(extra_header=padding))
        for i in range(0, len(data), 65536):
            yield data[i : i + 65536]

    response = requests.post(
        server.endpoint("GetMeterReadings"),
        data=chunks(),
        headers={"Content-Type": "text/xml", "SOAPAction": GET_ACTION},
        auth=("cis", "cis-secret"),
        timeout=10,
    )
    assert response.status_code == 413
    still_up(server)


def test_a_slow_client_does_not_block_others(server: Server) -> None:
    """A client that sends half a request and stalls holds one worker; others are served."""
    stalled: list[socket.socket] = []
    for _ in range(2):
        s = socket.create_connection(("127.0.0.1", server.service.port))
        s.sendall(
            b"POST /ws/GetMeterReadings HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\n"
            b"Content-Length: 5000\r\n\r\n<soapenv:Envelope"
        )
        stalled.append(s)
    try:
        timings = []
        errors: list[BaseException] = []

        def call() -> None:
            try:
                started = time.perf_counter()
                still_up(server)
                timings.append(time.perf_counter() - started)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=call) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert not errors, errors
        assert len(timings) == 4
        assert max(timings) < 4, timings  # well before the stalled clients time out (5 s)
    finally:
        for s in stalled:
            s.close()


def test_get_and_unknown_paths(server: Server) -> None:
    assert requests.get(f"{server.url}/ws/Nope?wsdl", timeout=5).status_code == 404
    assert requests.get(f"{server.url}/", timeout=5).status_code == 404
    assert requests.put(server.endpoint("GetMeterReadings"), timeout=5).status_code == 405


@pytest.mark.parametrize("service", ["GetMeterReadings"])
def test_wsdl_address_follows_the_host_header(server: Server, service: str) -> None:
    response = requests.get(
        server.wsdl(service), headers={"Host": "cis-gateway.example:8443"}, timeout=5
    )
    assert b'location="http://cis-gateway.example:8443/ws/GetMeterReadings"' in response.content
