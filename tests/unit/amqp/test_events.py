"""created.<Noun> events: the received Payload copied as bytes, or through the tree."""

from __future__ import annotations

import pytest
from lxml import etree

from adapters.amqp import events
from cim_schemas import envelope, schemas
from cim_schemas.xml import parse_bytes
from hub.messages import Outcome
from tests.unit.amqp.partner import readings_request

OK = Outcome(result="OK", reply=b"", verb="create", noun="MeterReadings", message_id="req-1 <&>")


def _parts(event: bytes) -> tuple[envelope.Header, bytes]:
    tree = parse_bytes(event)
    assert schemas.validate(tree) == []
    parsed = envelope.parse_message(tree.getroot())
    assert parsed.kind == "event"
    assert parsed.header is not None
    assert parsed.payload is not None
    return parsed.header, etree.tostring(parsed.payload, method="c14n")


def _tree_event(body: bytes) -> bytes:
    header = envelope.Header(
        verb="created",
        noun="MeterReadings",
        timestamp=envelope.now_utc(),
        source="amihub",
        message_id=events.event_id("cis", "m-1"),
        correlation_id=OK.message_id,
    )
    built = events._tree_event(body, header, "m-1")
    assert built is not None
    return built[1]


def test_the_payload_bytes_are_copied_and_give_the_tree_paths_document() -> None:
    body = readings_request("MTR-1")
    assert events._payload_bytes(body) is not None  # the common shape takes the copy
    built = events.build_event(body, OK, "cis", "m-1")
    assert built is not None
    key, event, message_id = built
    assert key == "created.MeterReadings"
    assert message_id == events.event_id("cis", "m-1")
    header, payload = _parts(event)
    tree_header, tree_payload = _parts(_tree_event(body))
    assert payload == tree_payload
    for field in ("verb", "noun", "source", "message_id", "correlation_id"):
        assert getattr(header, field) == getattr(tree_header, field)
    assert header.correlation_id == "req-1 <&>"  # escaped in the copy's Header
    assert len(etree.fromstring(event).findall(".//{*}IntervalReadings")) == 96


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda b: b.replace(b"<m:value>0", b"<m:value><![CDATA[0]]>", 1), "CDATA"),
        (lambda b: b.replace(b"</m:MeterReadings>", b"<!-- x --></m:MeterReadings>"), "comment"),
        (lambda b: b.replace(b"</m:MeterReadings>", b"<?pi x?></m:MeterReadings>"), "PI"),
        (lambda b: b.replace(b"UTF-8", b"ISO-8859-1", 1), "encoding"),
        (lambda b: b.replace(b"<Payload>", b"<Payload >", 1), "spaced tag"),
    ],
)
def test_other_shapes_take_the_tree_path(change: object, why: str) -> None:
    body = change(readings_request("MTR-1"))  # type: ignore[operator]
    assert events._payload_bytes(body) is None, why
    built = events.build_event(body, OK, "cis", "m-1")
    assert built is not None
    header, payload = _parts(built[1])
    assert header.verb == "created"
    assert payload == _parts(_tree_event(body))[1]


def test_a_prefixed_envelope_takes_the_tree_path() -> None:
    body = readings_request("MTR-1")
    prefixed = body.replace(b'xmlns="http', b'xmlns:msg="http', 1)
    for tag in (b"RequestMessage", b"Header", b"Verb", b"Noun", b"Revision", b"Timestamp"):
        prefixed = prefixed.replace(b"<" + tag, b"<msg:" + tag).replace(
            b"</" + tag, b"</msg:" + tag
        )
    for tag in (b"Source", b"MessageID", b"Payload"):
        prefixed = prefixed.replace(b"<" + tag, b"<msg:" + tag).replace(
            b"</" + tag, b"</msg:" + tag
        )
    assert schemas.validate(parse_bytes(prefixed)) == []
    assert events._payload_bytes(prefixed) is None
    built = events.build_event(prefixed, OK, "cis", "m-1")
    assert built is not None
    assert _parts(built[1])[1] == _parts(_tree_event(body))[1]


def test_no_event_for_a_refusal_or_a_get() -> None:
    body = readings_request("MTR-1")
    failed = Outcome(result="PARTIAL", reply=b"", verb="create", noun="MeterReadings")
    get = Outcome(result="OK", reply=b"", verb="get", noun="MeterReadings")
    assert events.build_event(body, failed, "cis", "m-1") is None
    assert events.build_event(body, get, "cis", "m-1") is None
