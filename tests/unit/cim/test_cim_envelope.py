"""IEC 61968-100 envelope: parse, render, the wrapper style and its checks."""

from __future__ import annotations

import base64
import gzip
import io
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from lxml import etree

from cim_schemas import envelope as env
from cim_schemas.errors import ErrorDetail, ErrorLevel, HeaderInvalid, NotAnEnvelope
from cim_schemas.meter_readings import write_readings
from cim_schemas.namespaces import GET_METER_READINGS_MESSAGE_NS, MESSAGE_NS, message_ns
from cim_schemas.profiles import get_meter_readings as gmr
from cim_schemas.profiles import meter_readings as mr
from cim_schemas.profiles.common import IdentifiedObject
from cim_schemas.xml import parse_bytes
from hub.readings_codec import STORED_QUALITIES

Golden = Callable[[str], etree._ElementTree]
Valid = Callable[[bytes | etree._Element], etree._Element]
PLUS8 = timezone(timedelta(hours=8))


def full_header(verb: str = "create", noun: str = "MeterReadings") -> env.Header:
    return env.Header(
        verb=verb,
        noun=noun,
        revision="2.0",
        timestamp=datetime(2026, 3, 1, 8, 15, 2, 250000, tzinfo=PLUS8),
        source="HES-EAST",
        async_reply_flag=True,
        reply_address="https://cis.example/replies",
        ack_required=False,
        user_id="hes-east",
        organization="Grid East",
        message_id="m-1",
        correlation_id="c-1",
        comment="note",
        context="PRODUCTION",
        replay_detection=env.ReplayDetection("n0nce", datetime(2026, 3, 1, tzinfo=UTC)),
        properties=(("ReadingTypeGroup", "LP15"), ("MessageIndex", "1/3")),
    )


# -- golden files -------------------------------------------------------------------------


def test_golden_created_meter_readings_header(golden: Golden) -> None:
    msg = env.parse_message(golden("created_meter_readings.xml").getroot())
    assert (msg.kind, msg.style, msg.root_name) == ("event", "wrapper", "CreatedMeterReadings")
    h = msg.header
    assert h is not None
    assert (h.verb, h.noun, h.revision, h.source) == ("created", "MeterReadings", "2.0", "HES-EAST")
    assert h.timestamp == datetime(2026, 3, 1, 0, 15, 2, 250000, tzinfo=UTC)
    assert h.timestamp is not None
    assert h.timestamp.utcoffset() == timedelta(hours=8)
    assert h.async_reply_flag is False
    assert h.ack_required is True
    assert (h.user_id, h.organization) == ("hes-east", "Grid East")
    assert h.properties == (("ReadingTypeGroup", "LP15"), ("MessageIndex", "1/3"))
    assert h.property("MessageIndex") == "1/3"
    assert h.property("nope") is None
    assert msg.payload is not None
    assert msg.payload.tag == "{http://iec.ch/TC57/2011/MeterReadings#}MeterReadings"
    assert msg.payload_xpath == "/CreatedMeterReadings/Payload/MeterReadings"


def test_golden_draft_namespace_request(golden: Golden) -> None:
    msg = env.parse_message(golden("draft_namespace_request.xml").getroot())
    assert (msg.kind, msg.style, msg.root_name) == ("request", "envelope", "RequestMessage")
    assert msg.header is not None
    assert msg.header.async_reply_flag is True
    assert msg.header.reply_address == "amqp://hub/replies.cis"
    assert msg.payload is not None
    assert etree.QName(msg.payload).localname == "EndDeviceControls"


def test_draft_namespace_parses_even_without_normalising() -> None:
    data = b"""<EventMessage xmlns="http://www.iec.ch/TC57/2011/schema/message"><Header>
        <Verb>created</Verb><Noun>EndDeviceEvents</Noun></Header><Payload>
        <EndDeviceEvents xmlns="http://iec.ch/TC57/2011/EndDeviceEvents#"/></Payload></EventMessage>"""
    msg = env.parse_message(parse_bytes(data).getroot())
    assert msg.kind == "event"
    assert msg.header is not None
    assert msg.header.noun == "EndDeviceEvents"


def test_golden_get_meter_readings(golden: Golden) -> None:
    msg = env.parse_message(golden("get_meter_readings.xml").getroot())
    assert (msg.kind, msg.style, msg.namespace) == (
        "request",
        "wrapper",
        GET_METER_READINGS_MESSAGE_NS,
    )
    assert msg.header is not None
    assert (msg.header.verb, msg.header.noun) == ("get", "MeterReadings")
    req = msg.request
    assert req is not None
    assert req.start_time == datetime(2026, 2, 28, 16, tzinfo=UTC)
    assert req.end_time == datetime(2026, 3, 1, 16, tzinfo=UTC)
    assert req.option("includeQualities") == "true"
    assert req.get is not None
    get = gmr.parse_get_meter_readings(req.get)
    assert get.end_devices[0].name("SerialNumber") == "SN-778899"
    assert get.reading_types[0].mrid == "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"


def test_wrapper_header_verb_must_agree_with_the_element(golden: Golden) -> None:
    with pytest.raises(HeaderInvalid) as info:
        env.parse_message(golden("verb_mismatch.xml").getroot())
    assert info.value.code == "1008"
    assert info.value.errors[0].xpath == "/CreatedMeterReadings/Header/Verb"
    assert "create" in info.value.reason


def test_wrapper_header_noun_must_agree_with_the_element() -> None:
    data = b"""<m:CreatedMeterConfig xmlns:m="http://iec.ch/TC57/2011/MeterConfigMessage"
        xmlns:msg="http://iec.ch/TC57/2011/schema/message"><m:Header><msg:Verb>created</msg:Verb>
        <msg:Noun>UsagePointConfig</msg:Noun></m:Header></m:CreatedMeterConfig>"""
    with pytest.raises(HeaderInvalid) as info:
        env.parse_message(parse_bytes(data).getroot())
    assert info.value.errors[0].xpath == "/CreatedMeterConfig/Header/Noun"


def test_golden_fault_with_a_peer_error_code(golden: Golden) -> None:
    msg = env.parse_message(golden("end_device_events_fault.xml").getroot())
    assert (msg.kind, msg.style, msg.header) == ("fault", "wrapper", None)
    assert msg.reply is not None
    assert msg.reply.result == "FAILED"
    err = msg.reply.errors[0]
    assert isinstance(err, env.PeerErrorDetail)
    assert (err.code, err.level, err.reason, err.object_id) == (
        "E-4711",
        ErrorLevel.WARNING,
        "subscriber unknown",
        "MTR-9",
    )


# -- refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"<html/>",
        b'<RequestMessage xmlns="urn:other"/>',
        b'<Message xmlns="http://iec.ch/TC57/2011/schema/message"/>',
        b'<CreatedThings xmlns="http://iec.ch/TC57/2011/ThingsMessage"/>',
        b'<Frobnicate xmlns="http://iec.ch/TC57/2011/MeterReadingsMessage"/>',
        b'<CreateMeterReadings xmlns="http://iec.ch/TC57/2011/MeterConfigMessage"/>',
    ],
)
def test_not_an_envelope(data: bytes) -> None:
    root = parse_bytes(data).getroot()
    assert env.is_message_root(root) is False
    with pytest.raises(NotAnEnvelope) as info:
        env.parse_message(root)
    assert info.value.code == "1004"


def _request(header_xml: str) -> etree._Element:
    return parse_bytes(
        f'<RequestMessage xmlns="{MESSAGE_NS}">'
        f"<Header>{header_xml}</Header></RequestMessage>".encode()
    ).getroot()


@pytest.mark.parametrize(
    ("header_xml", "xpath"),
    [
        ("<Verb>launch</Verb><Noun>MeterReadings</Noun>", "/RequestMessage/Header/Verb"),
        ("<Verb>get</Verb><Noun></Noun>", "/RequestMessage/Header/Noun"),
        (
            "<Verb>get</Verb><Noun>MeterReadings</Noun><Timestamp>2026-03-01T00:00:00</Timestamp>",
            "/RequestMessage/Header/Timestamp",
        ),
        (
            "<Verb>get</Verb><Noun>MeterReadings</Noun><Timestamp>soon</Timestamp>",
            "/RequestMessage/Header/Timestamp",
        ),
        (
            "<Verb>get</Verb><Noun>MeterReadings</Noun><AckRequired>maybe</AckRequired>",
            "/RequestMessage/Header/AckRequired",
        ),
    ],
)
def test_header_invalid(header_xml: str, xpath: str) -> None:
    with pytest.raises(HeaderInvalid) as info:
        env.parse_message(_request(header_xml))
    assert info.value.code == "1008"
    assert info.value.errors[0].xpath == xpath


def test_parse_header_alone_as_a_streaming_reader_does() -> None:
    data = full_header()
    root = etree.fromstring(env.render_request(data, style="wrapper"))
    header_el = root[0]
    assert env.parse_header(header_el) == data


def test_header_dataclass_refuses_bad_values() -> None:
    with pytest.raises(ValueError, match="verb"):
        env.Header(verb="launch", noun="X")
    with pytest.raises(ValueError, match="aware"):
        env.Header(verb="get", noun="X", timestamp=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="result"):
        env.Reply("MAYBE")


# -- render -> validate -> parse ----------------------------------------------------------


@pytest.mark.parametrize("style", ["envelope", "wrapper"])
@pytest.mark.parametrize(
    "noun",
    ["MeterReadings", "EndDeviceControls", "EndDeviceEvents", "MeterReadSchedule", "MeterConfig",
     "UsagePointConfig", "MasterDataLinkageConfig"],
)  # fmt: skip
@pytest.mark.parametrize("verb", ["create", "change", "cancel", "close", "delete"])
def test_request_round_trip(verb: str, noun: str, style: env.Style, assert_valid: Valid) -> None:
    header = full_header(verb, noun)
    request = env.RequestInfo(
        start_time=datetime(2026, 1, 1, tzinfo=UTC),
        end_time=datetime(2026, 1, 2, tzinfo=PLUS8),
        options=(("a", "1"), ("b", None)),
        ids=(env.RequestID("MTR-1", "mRID", "utility", "uuid", "EndDevice"),),
    )
    root = assert_valid(env.render_request(header, request, style=style))
    msg = env.parse_message(root)
    assert (msg.kind, msg.style) == ("request", style)
    expected_root = "RequestMessage" if style == "envelope" else verb.capitalize() + noun
    assert msg.root_name == expected_root
    assert msg.header == header
    assert msg.request == env.RequestInfo(
        request.start_time, request.end_time, (("a", "1"), ("b", None)), request.ids
    )


@pytest.mark.parametrize("style", ["envelope", "wrapper"])
@pytest.mark.parametrize("verb", ["created", "changed", "canceled", "closed", "deleted"])
def test_event_round_trip(verb: str, style: env.Style, assert_valid: Valid) -> None:
    header = full_header(verb, "MeterReadings")
    payload = mr.render_meter_readings(mr.MeterReadings())
    root = assert_valid(env.render_event(header, payload, style=style))
    msg = env.parse_message(root)
    assert (msg.kind, msg.header) == ("event", header)
    assert msg.payload is not None
    assert mr.parse_meter_readings(msg.payload) == mr.MeterReadings()


def test_get_request_wrapper_round_trip(assert_valid: Valid) -> None:
    header = env.Header(verb="get", noun="MeterReadings", message_id="g-1")
    get = gmr.render_get_meter_readings(
        gmr.GetMeterReadings(end_devices=(IdentifiedObject("MTR-1"),))
    )
    request = env.RequestInfo(start_time=datetime(2026, 1, 1, tzinfo=UTC), get=get)
    root = assert_valid(env.render_request(header, request, style="wrapper"))
    assert root.tag == f"{{{GET_METER_READINGS_MESSAGE_NS}}}GetMeterReadings"
    msg = env.parse_message(root)
    assert msg.request is not None
    assert msg.request.get is not None
    assert gmr.parse_get_meter_readings(msg.request.get).end_devices[0].mrid == "MTR-1"
    # generic envelope carries the Get profile in Request (xs:any, lax)
    root = assert_valid(env.render_request(header, request, style="envelope"))
    assert env.parse_message(root).request is not None


def test_get_meter_readings_response_goes_to_the_get_namespace(assert_valid: Valid) -> None:
    request = env.Header(verb="get", noun="MeterReadings", message_id="g-2")
    readings = mr.render_meter_readings(mr.MeterReadings())
    root = assert_valid(env.render_response(request, env.Reply("OK"), readings, style="wrapper"))
    assert root.tag == f"{{{GET_METER_READINGS_MESSAGE_NS}}}MeterReadingsResponseMessage"


@pytest.mark.parametrize("style", ["envelope", "wrapper"])
def test_response_header_and_reply(style: env.Style, assert_valid: Valid) -> None:
    request = full_header("create", "MeterConfig")
    reply = env.Reply(
        "PARTIAL",
        (
            ErrorDetail(
                "2001", "unknown meter", xpath="/CreateMeterConfig/Payload", object_id="M9"
            ),
            ErrorDetail("2012", "nothing", level=ErrorLevel.INFORM, details="d"),
        ),
        ids=(env.RequestID("x", kind="transaction"),),
        operation_id=3,
    )
    before = datetime.now(UTC).replace(microsecond=0)
    root = assert_valid(env.render_response(request, reply, style=style))
    msg = env.parse_message(root)
    assert msg.kind == "response"
    h = msg.header
    assert h is not None
    assert (h.verb, h.noun, h.correlation_id) == ("reply", "MeterConfig", "m-1")
    assert h.message_id
    assert h.message_id != request.message_id
    assert h.timestamp is not None
    assert h.timestamp >= before
    assert h.timestamp.utcoffset() == timedelta(0)
    assert msg.reply == reply
    if style == "wrapper":
        assert root.tag == "{{{}}}MeterConfigResponseMessage".format(message_ns("MeterConfig"))


def test_response_with_a_made_reply_header_keeps_it(assert_valid: Valid) -> None:
    header = env.Header(verb="reply", noun="MeterReadings", message_id="r", correlation_id="q")
    root = assert_valid(env.render_response(header, env.Reply("OK"), style="wrapper"))
    assert env.parse_message(root).header == header


def test_response_for_an_unknown_noun_falls_back_to_the_envelope(assert_valid: Valid) -> None:
    root = assert_valid(
        env.render_response(
            env.Header(verb="get", noun="Message"), env.Reply("FAILED"), style="wrapper"
        )
    )
    assert etree.QName(root).localname == "ResponseMessage"


@pytest.mark.parametrize("style", ["envelope", "wrapper"])
def test_fault_round_trip(style: env.Style, assert_valid: Valid) -> None:
    reply = env.Reply("FAILED", (ErrorDetail("1005", "schema invalid", xpath="/x"),))
    root = assert_valid(env.render_fault(reply, noun="EndDeviceControls", style=style))
    msg = env.parse_message(root)
    assert (msg.kind, msg.header, msg.reply) == ("fault", None, reply)
    name = "FaultMessage" if style == "envelope" else "EndDeviceControlsFaultMessage"
    assert msg.root_name == name


def test_operation_set_and_compressed_payloads(assert_valid: Valid) -> None:
    mr_ns = "http://iec.ch/TC57/2011/MeterReadings#"
    data = f"""<RequestMessage xmlns="{MESSAGE_NS}"><Header><Verb>create</Verb>
      <Noun>MeterReadings</Noun></Header><Payload><OperationSet>
      <enforceMsgSequence>true</enforceMsgSequence><Operation><operationId>1</operationId>
      <noun>MeterReadings</noun><verb>create</verb><MeterReadings xmlns="{mr_ns}"/></Operation>
      </OperationSet></Payload></RequestMessage>""".encode()
    msg = env.parse_message(assert_valid(data))
    assert msg.payload is None
    assert msg.operation_set is not None
    assert msg.operation_set.enforce_msg_sequence is True
    op = msg.operation_set.operations[0]
    assert (op.operation_id, op.noun, op.verb) == (1, "MeterReadings", "create")
    assert etree.QName(op.elements[0]).localname == "MeterReadings"

    inner = b'<MeterReadings xmlns="http://iec.ch/TC57/2011/MeterReadings#"/>'
    packed = base64.b64encode(gzip.compress(inner)).decode()
    data = f"""<m:CreatedMeterReadings xmlns:m="{message_ns("MeterReadings")}"
      xmlns:msg="{MESSAGE_NS}"><m:Header><msg:Verb>created</msg:Verb><msg:Noun>MeterReadings</msg:Noun>
      </m:Header><m:Payload><m:Compressed>{packed}</m:Compressed><m:Format>XML</m:Format></m:Payload>
      </m:CreatedMeterReadings>""".encode()
    msg = env.parse_message(assert_valid(data))
    assert msg.compressed is not None
    assert gzip.decompress(msg.compressed) == inner
    assert msg.payload_format == "XML"


def test_response_writer_streams_a_valid_message(assert_valid: Valid) -> None:
    out = io.BytesIO()
    request = env.Header(verb="get", noun="MeterReadings", message_id="q")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    rt = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
    rows = [
        ("MTR-1", rt, (t0 + timedelta(minutes=15 * i)).isoformat(), str(i), "") for i in range(5)
    ]
    styles: tuple[env.Style, ...] = ("envelope", "wrapper")
    for style in styles:
        out = io.BytesIO()
        with env.response_writer(out, request, env.Reply("OK"), style=style) as xf:
            write_readings(xf, rows if style == "envelope" else [], STORED_QUALITIES, raw=out)
        root = assert_valid(out.getvalue())
        msg = env.parse_message(root)
        assert msg.header is not None
        assert msg.header.correlation_id == "q"
        assert msg.payload is not None
    first = env.parse_message(assert_valid(out.getvalue()))
    assert first.reply == env.Reply("OK")


def test_is_message_root() -> None:
    for tag in (
        f"{{{MESSAGE_NS}}}RequestMessage",
        "{http://www.iec.ch/TC57/2011/schema/message}EventMessage",
        "{{{}}}CanceledEndDeviceControls".format(message_ns("EndDeviceControls")),
        "{{{}}}GetMeterConfig".format(message_ns("MeterConfig")),
        f"{{{GET_METER_READINGS_MESSAGE_NS}}}MeterReadingsFaultMessage",
    ):
        assert env.is_message_root(etree.Element(tag)), tag
    assert "RequestMessage" in env.ENVELOPE_ROOTS


def test_rendered_response_matches_the_golden_file(assert_valid: Valid) -> None:
    from pathlib import Path

    t0 = datetime(2026, 3, 1, tzinfo=PLUS8)
    header = env.Header(
        verb="reply",
        noun="MeterReadings",
        timestamp=datetime(2026, 3, 2, 2, 0, tzinfo=UTC),
        source="amihub",
        message_id="8f0d7a52-0000-4000-8000-000000000001",
        correlation_id="get-42",
    )
    readings = (
        mr.IntervalReading(t0 + timedelta(minutes=15), Decimal("0.1250")),
        mr.IntervalReading(
            t0 + timedelta(minutes=30),
            Decimal("0.0975"),
            reading_qualities=(mr.ReadingQuality("3.8.0"),),
        ),
    )
    obj = mr.MeterReadings(
        (
            mr.MeterReading(
                meter=mr.Meter(mrid="MTR-1"),
                usage_point=IdentifiedObject("UP-000042"),
                interval_blocks=(
                    mr.IntervalBlock("0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0", readings),
                ),
            ),
        )
    )
    rendered = env.render_response(
        header,
        env.Reply("PARTIAL"),
        mr.render_meter_readings(obj),
        style="wrapper",
        namespace=GET_METER_READINGS_MESSAGE_NS,
    )
    assert_valid(rendered)
    expected = (
        Path(__file__).parent / "data" / "meter_readings_response.expected.xml"
    ).read_bytes()

    def canonical(data: bytes) -> str:
        return etree.canonicalize(etree.tostring(parse_bytes(data)).decode(), strip_text=True)

    assert canonical(rendered) == canonical(expected)
