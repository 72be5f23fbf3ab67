"""A CIS built against the standard's WSDLs works unchanged (issue 12, points 1-6).

Each test goes through the real interface: SOAP over HTTP to a running amihub, with
zeep, or raw HTTP where zeep cannot express the case (another implementation's
soapAction, a client that sends credentials only when challenged).
"""

from __future__ import annotations

import urllib.error
import urllib.request
import uuid

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
