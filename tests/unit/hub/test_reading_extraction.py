"""The batch route's reading of a parsed message through the MeterReadings codec: the tree
fast path and the exact one."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from lxml import etree

from cim_schemas import envelope
from cim_schemas.errors import PayloadInvalid
from cim_schemas.meter_readings import STREAM_TAGS, Chunk, MeterReadingsReader
from cim_schemas.xml import parse_bytes
from hub.nouns.meter_readings import StoreMeterReadingsRoute
from hub.readings_codec import STORED_QUALITIES, feed
from hub.routing import MessageFrame
from hub.samples import meter_readings_bytes
from tests.unit.hub.conftest import START

MR = "/RequestMessage/Payload/MeterReadings"


def frame_of(body: bytes) -> MessageFrame:
    parsed = envelope.parse_message(parse_bytes(body).getroot())
    assert parsed.header is not None
    return MessageFrame(
        header=parsed.header,
        style=parsed.style,
        root_name="RequestMessage",
        request=parsed.request,
        payload=parsed.payload,
    )


def reader() -> MeterReadingsReader:
    return MeterReadingsReader(MR, STORED_QUALITIES, 200_000, 1 << 62)


def exact(frame: MessageFrame) -> tuple[MeterReadingsReader, list[Chunk]]:
    extractor = reader()
    events = etree.iterwalk(frame.payload, events=("end",), tag=STREAM_TAGS)
    return extractor, list(extractor._read(events, free=False))


def day(*meters: str, registers: bool = False) -> bytes:
    return meter_readings_bytes(list(meters), START, 96, verb="create", registers=registers)


def test_the_fast_path_gives_what_the_exact_path_gives() -> None:
    frame = frame_of(day("F1", "F2", "F3"))
    fast = reader()
    assert frame.payload is not None
    chunk = fast._tree_fast(frame.payload)
    assert chunk is not None
    slow, chunks = exact(frame)
    assert chunk == chunks
    assert fast.meters == slow.meters
    assert fast.readings_seen == slow.readings_seen == 3 * 96
    prepared = StoreMeterReadingsRoute().prepare(frame)
    assert prepared.chunks == list(feed(iter(chunks)))


Change = Callable[[bytes], bytes]


@pytest.mark.parametrize(
    ("change", "code", "where"),
    [
        (
            lambda b: b.replace(b"<m:value>0.", b"<m:value>x0.", 1),
            "2005",
            "IntervalReadings[1]/value",
        ),
        (
            lambda b: b.replace(b"<m:value>0.", b"<m:value>NaN", 1),
            "2005",
            "IntervalReadings[1]/value",
        ),
        (
            lambda b: b.replace(b"<m:value>0.0", b"<m:value>Infinity", 1),
            "2005",
            "IntervalReadings[1]/value",
        ),
        (
            lambda b: b.replace(b"+00:00</m:timeStamp>", b"</m:timeStamp>", 1),
            "2006",
            "IntervalReadings[1]/timeStamp",
        ),
        (
            lambda b: b.replace(b"<m:timeStamp>2026", b"<m:timeStamp>", 1),
            "2006",
            "IntervalReadings[1]/timeStamp",
        ),
        (
            lambda b: b.replace(b"<m:timeStamp>", b"<m:timeStampX>", 1).replace(
                b"</m:timeStamp>", b"</m:timeStampX>", 1
            ),
            None,  # the schema refuses it before; here: not the fast path's business
            None,
        ),
    ],
)
def test_irregular_readings_leave_the_fast_path_and_get_their_exact_xpath(
    change: Change, code: str | None, where: str | None
) -> None:
    body = change(day("F1"))
    frame = frame_of(body)
    assert frame.payload is not None
    fast = reader()
    assert fast._tree_fast(frame.payload) is None
    assert fast.meters == {}
    assert fast.readings_seen == 0
    if code is None:
        return
    with pytest.raises(PayloadInvalid) as refused:
        StoreMeterReadingsRoute().prepare(frame)
    [error] = refused.value.errors
    assert error.code == code
    assert error.xpath == f"{MR}/MeterReading[1]/IntervalBlocks[1]/{where}"


def test_quality_codes_and_registers_take_the_exact_path() -> None:
    with_registers = frame_of(day("F1", registers=True))
    assert with_registers.payload is not None
    assert reader()._tree_fast(with_registers.payload) is None
    quality = day("F1").replace(
        b"</m:value></m:IntervalReadings>",
        b'</m:value><m:ReadingQualities><m:ReadingQualityType ref="1.4.9"/>'
        b"</m:ReadingQualities></m:IntervalReadings>",
        1,
    )
    frame = frame_of(quality)
    assert frame.payload is not None
    assert reader()._tree_fast(frame.payload) is None
    prepared = StoreMeterReadingsRoute().prepare(frame)
    first = prepared.chunks[0].blocks[0].readings[0]
    assert first[2] == "1.4.9"
    assert prepared.extractor.readings_seen == 96


def test_a_meter_reading_without_meter_is_refused_with_its_xpath() -> None:
    body = day("F1").replace(b"<m:Meter><m:mRID>F1</m:mRID></m:Meter>", b"")
    frame = frame_of(body)
    assert frame.payload is not None
    assert reader()._tree_fast(frame.payload) is None
    with pytest.raises(PayloadInvalid) as refused:
        StoreMeterReadingsRoute().prepare(frame)
    assert refused.value.errors[0].code == "2011"
    assert refused.value.errors[0].xpath == f"{MR}/MeterReading[1]/Meter"


def test_fields_the_route_does_not_read_stay_on_the_fast_path() -> None:
    body = day("F1").replace(
        b"<m:IntervalReadings><m:timeStamp>",
        b"<m:IntervalReadings><m:source>meter</m:source><m:timeStamp>",
        2,
    )
    frame = frame_of(body)
    assert frame.payload is not None
    fast = reader()
    chunk = fast._tree_fast(frame.payload)
    assert chunk is not None
    assert chunk == exact(frame)[1]


def test_a_quality_code_on_a_later_reading_takes_the_exact_path() -> None:
    body = day("F1")
    last = body.rindex(b"</m:value></m:IntervalReadings>")
    body = (
        body[:last]
        + b'</m:value><m:ReadingQualities><m:ReadingQualityType ref="1.4.9"/>'
        + b"</m:ReadingQualities></m:IntervalReadings>"
        + body[last + len(b"</m:value></m:IntervalReadings>") :]
    )
    frame = frame_of(body)
    assert frame.payload is not None
    assert reader()._tree_fast(frame.payload) is None
    prepared = StoreMeterReadingsRoute().prepare(frame)
    readings = prepared.chunks[0].blocks[0].readings
    assert readings[-1][2] == "1.4.9"
    assert {q for _, _, q in readings[:-1]} == {""}
