"""Plain replies from a template give the bytes render_response gives."""

from __future__ import annotations

import pytest
from lxml import etree

from cim_schemas import envelope, schemas
from cim_schemas.envelope import Header, Reply
from cim_schemas.xml import parse_bytes
from hub import reply_templates
from hub.reply_templates import ReplyTemplates


def expected(request: Header, reply: bytes, result: str) -> bytes:
    parsed = envelope.parse_message(parse_bytes(reply).getroot())
    assert parsed.header is not None
    assert parsed.header.timestamp is not None
    assert parsed.header.message_id is not None
    header = reply_templates.reply_header(
        request, parsed.header.timestamp, parsed.header.message_id
    )
    return envelope.render_response(header, Reply(result=result), None)


@pytest.mark.parametrize(
    "request_header",
    [
        Header(verb="create", noun="MeterReadings", message_id="m-1"),
        Header(verb="created", noun="MeterReadings", message_id="a&b<c>\"'", revision="2.0"),
        Header(verb="create", noun="MeterReadings", context="PRODUCTION", revision="x<y"),
        Header(verb="change", noun="MeterConfig", message_id="m-2"),
    ],
)
def test_template_replies_equal_rendered_ones(request_header: Header) -> None:
    templates = ReplyTemplates()
    for result in ("OK", "PARTIAL", "OK"):
        reply = templates.render(request_header, "envelope", result)
        assert schemas.validate(parse_bytes(reply)) == []
        assert reply == expected(request_header, reply, result)
        parsed = envelope.parse_message(parse_bytes(reply).getroot())
        assert parsed.header is not None
        assert parsed.header.correlation_id == request_header.message_id
    first = templates.render(request_header, "envelope", "OK")
    second = templates.render(request_header, "envelope", "OK")
    assert first != second  # a new MessageID each time


def test_the_wrapper_style_is_rendered_whole() -> None:
    request = Header(verb="create", noun="MeterReadings", message_id="m-1")
    reply = ReplyTemplates().render(request, "wrapper", "OK")
    assert schemas.validate(parse_bytes(reply)) == []
    rendered = envelope.render_response(request, Reply(result="OK"), style="wrapper")
    assert etree.QName(parse_bytes(reply).getroot()) == etree.QName(parse_bytes(rendered).getroot())
    parsed = envelope.parse_message(parse_bytes(reply).getroot())
    assert parsed.style == "wrapper"
    assert parsed.header is not None
    assert parsed.header.correlation_id == "m-1"


def test_shapes_are_bounded() -> None:
    templates = ReplyTemplates()
    for n in range(reply_templates.MAX_SHAPES + 5):
        templates.render(
            Header(verb="create", noun="MeterReadings", revision=str(n)), "envelope", "OK"
        )
    assert len(templates._shapes) <= reply_templates.MAX_SHAPES
