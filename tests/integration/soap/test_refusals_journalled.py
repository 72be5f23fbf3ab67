"""Refusals of the SOAP front door, over real HTTP: each answered with its Fault and
journalled -- a message-log row received -> dead_lettered with the Fault as its reply,
and a dead letter with the error code and the request body as it came."""

from __future__ import annotations

import socket
from dataclasses import dataclass

import pytest
import requests

from cim_schemas.errors import ConfigurationError
from hub.replay import replay
from mdm.ports import DeadLetter, MessageState
from tests.integration.soap.conftest import Server
from tests.integration.soap.test_bad_input import (
    GET_ACTION,
    envelope,
    fault_of,
    get_body,
    post,
)

DOCTYPE = '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]>'


@dataclass
class Journalled:
    row: MessageState
    steps: list[str]
    letter: DeadLetter


def journalled(server: Server) -> list[Journalled]:
    """Every dead letter with its message-log row and lifecycle, oldest first."""
    out = []
    with server.app.uow_factory() as uow:
        for letter in sorted(uow.dead_letters.list(limit=1000), key=lambda d: d.id):
            assert letter.message_log_id is not None
            row = uow.messages.get(letter.message_log_id)
            assert row is not None
            steps = [s for s, _, _ in uow.messages.lifecycle(row.id)]
            out.append(Journalled(row, steps, letter))
    return out


def only_refusal(server: Server, response: requests.Response, code: str, sent: bytes) -> Journalled:
    [entry] = journalled(server)
    assert entry.steps == ["received", "dead_lettered"]
    assert (entry.row.state, entry.row.result) == ("dead_lettered", "FAILED")
    assert entry.row.reply == response.content  # the Fault the sender got
    assert entry.letter.error_code == code
    assert entry.letter.endpoint == "soap:/ws/GetMeterReadings"
    assert entry.letter.body == sent  # the input, kept as it came
    assert entry.letter.metadata["remote"] == "127.0.0.1"
    assert "not_replayable" in entry.letter.metadata
    return entry


@pytest.mark.parametrize(
    ("name", "data", "code"),
    [
        ("not well-formed", b"<soapenv:Envelope><unclosed>", "1001"),
        ("DOCTYPE", envelope(get_body(), prolog=DOCTYPE), "1002"),
        ("not a SOAP envelope", get_body().encode(), "1004"),
    ],
)
def test_a_request_refused_before_authentication_is_journalled(
    server: Server, name: str, data: bytes, code: str
) -> None:
    response = post(server, data)
    assert response.status_code == 500, name
    _, text, errors = fault_of(response)
    assert errors[0][0] == code, text
    entry = only_refusal(server, response, code, data)
    assert entry.row.source == "soap:127.0.0.1"  # nobody was authenticated yet
    assert entry.letter.source == "soap:127.0.0.1"
    assert not entry.letter.truncated


def test_a_soap_action_naming_another_operation_is_journalled_under_the_user(
    server: Server,
) -> None:
    data = envelope(get_body())
    wrong = "http://iec.ch/TC57/2011/GetMeterReadings/GetEndDeviceEvents"
    response = post(server, data, action=wrong)
    _, text, errors = fault_of(response)
    assert errors[0][0] == "1006", text
    entry = only_refusal(server, response, "1006", data)
    assert entry.row.source == "cis"  # authenticated: the refusal is the user's
    assert entry.letter.metadata["soap_action"] == f'"{wrong}"'
    assert entry.letter.metadata["content_type"] == "text/xml; charset=utf-8"
    with pytest.raises(ConfigurationError, match="cannot be replayed"):
        replay(server.app, entry.letter.id)


def test_a_body_element_of_another_service_is_journalled(server: Server) -> None:
    data = envelope(get_body()).replace(b"g:GetMeterReadings ", b"g:GetEndDeviceEvents ", 1)
    data = data.replace(b"</g:GetMeterReadings>", b"</g:GetEndDeviceEvents>")
    response = post(server, data, action="")
    _, text, errors = fault_of(response)
    assert errors[0][0] == "1006", text
    only_refusal(server, response, "1006", data)


def test_no_credentials_are_journalled_and_audited(server: Server) -> None:
    data = envelope(get_body())
    response = post(server, data, auth=None)
    assert response.status_code == 401
    entry = only_refusal(server, response, "1010", data)
    assert entry.row.source == "soap:127.0.0.1"
    with server.app.uow_factory() as uow:
        [audit] = [a for a in uow.audit.list(10) if a[2] == "refused"]
    assert audit[3] == "soap"


def test_an_oversize_body_refused_unread_keeps_what_was_read(server: Server) -> None:
    """Content-Length over max_body_bytes (2 MiB here): 413 without reading the body;
    the row has the declared size, the dead letter what was read (nothing), truncated."""
    declared = 5 * 1024 * 1024
    head = (
        b"POST /ws/GetMeterReadings HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: text/xml; charset=utf-8\r\n"
        + f"Content-Length: {declared}\r\n\r\n".encode()
    )
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head + b"<soapenv:Envelope")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413 ")
    [entry] = journalled(server)
    assert entry.steps == ["received", "dead_lettered"]
    assert entry.letter.error_code == "1003"
    assert entry.letter.body == b""
    assert entry.letter.truncated
    assert entry.letter.metadata["content_length"] == str(declared)
    assert entry.letter.metadata["http_status"] == "413"
    assert entry.row.reply is not None
    assert answer.endswith(entry.row.reply)


def test_a_chunked_oversize_body_keeps_its_head(server: Server) -> None:
    limit = 2 * 1024 * 1024

    def chunks() -> object:
        yield b"<soapenv:Envelope>"
        for _ in range(40):
            yield b"x" * 65536

    response = requests.post(
        server.endpoint("GetMeterReadings"),
        data=chunks(),  # type: ignore[arg-type]
        headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": f'"{GET_ACTION}"'},
        auth=("cis", "cis-secret"),
        timeout=10,
    )
    assert response.status_code == 413
    [entry] = journalled(server)
    assert entry.letter.error_code == "1003"
    assert entry.letter.truncated
    assert entry.letter.body.startswith(b"<soapenv:Envelope>xxx")
    assert limit < len(entry.letter.body) <= limit + 65536 + 18


def test_a_valid_call_and_a_pipeline_refusal_are_journalled_once(server: Server) -> None:
    """The pipeline journals its own refusals (schema invalid): the front door does not
    write a second row; a served call leaves no dead letter."""
    ok = post(server, envelope(get_body()))
    assert ok.status_code == 200
    assert journalled(server) == []
    invalid = envelope(get_body().replace("<m:Noun>MeterReadings</m:Noun>", "<m:Nope/>"))
    response = post(server, invalid)
    _, text, errors = fault_of(response)
    assert errors[0][0] in ("1004", "1005"), text
    [entry] = journalled(server)
    assert entry.row.source == "cis"
    assert "not_replayable" not in entry.letter.metadata  # the pipeline's: replayable
