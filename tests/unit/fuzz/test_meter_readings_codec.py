"""The MeterReadings codec (cim_schemas/meter_readings) on generated documents and rows.

* reading: the tree fast path, the exact tree path and the stream (``iterparse`` with
  the schema, elements freed) give the same chunks, meters and counts, or the same
  errors (code, reason, xpath), on generated MeterReadings documents: random meters
  (mRID or Names), ReadingTypes, timestamps in several zones on DST days, qualities
  with and without notes, values, register Readings -- valid and with content errors;
* broken bytes (cut, deleted, inserted, repeated) are refused alike on the tree path
  and the stream;
* writing: the text-spliced writer (``raw``) and the element writer give the same
  document, and what is written reads back as the rows it was written from.

Deterministic: the amihub-fuzz profile of tests/unit/fuzz/conftest.py.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any
from xml.sax.saxutils import escape, quoteattr
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from cim_schemas import envelope, schemas
from cim_schemas.errors import AmihubError, PayloadInvalid
from cim_schemas.meter_readings import (
    STREAM_TAGS,
    Chunk,
    MeterReadingsReader,
    QualityNote,
    render_readings,
    value_text,
    write_readings,
)
from cim_schemas.namespaces import MESSAGE_NS, profile_ns
from cim_schemas.xml import LimitedReader, iterparse, parse_bytes, pull_events
from hub.readings_codec import STORED_QUALITIES

MR_NS = profile_ns("MeterReadings")
BASE = "/EventMessage/Payload/MeterReadings"
RT_15 = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
RT_60 = "0.0.7.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
RT_REGISTER = "0.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
RT_REGISTER_2 = "0.0.0.9.1.1.12.0.0.0.0.0.0.0.0.3.73.0"
BAD_RTS = ["1.2.3", "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72", "x"]
QUALITIES = ["1.4.9", "1.5.257", "2.7.0", "3.8.0", "1.0.0"]
BAD_QUALITIES = ["9.9.9", "1.4", "x.y.z"]
ZONES: list[Any] = [
    UTC,
    ZoneInfo("Europe/Berlin"),
    ZoneInfo("America/New_York"),
    ZoneInfo("Australia/Lord_Howe"),  # a half-hour DST shift
    timezone(timedelta(hours=14)),
    timezone(-timedelta(hours=12)),
    timezone(timedelta(hours=5, minutes=45)),
]
#: DST days in Europe and the US, a leap day, the year's ends
DAYS = [
    date(2026, 3, 29),
    date(2026, 10, 25),
    date(2026, 3, 8),
    date(2026, 11, 1),
    date(2024, 2, 29),
    date(2026, 1, 1),
    date(2026, 12, 31),
]
#: XML-safe texts (no control characters; no CR, which XML turns into LF)
texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=12)


# -- generated documents ----------------------------------------------------------------------


@st.composite
def instants(draw: st.DrawFn) -> datetime:
    """A quarter-hour (or an odd second) of a DST day, in one of several zones."""
    day = draw(st.sampled_from(DAYS))
    zone = draw(st.sampled_from(ZONES))
    minutes = draw(st.integers(0, 24 * 4)) * 15
    local = datetime.combine(day, time()) + timedelta(minutes=minutes)
    if draw(st.integers(0, 9)) == 0:
        local += timedelta(seconds=draw(st.integers(1, 59)), microseconds=draw(st.integers(0, 9)))
    return local.replace(tzinfo=zone, fold=draw(st.integers(0, 1)))


@st.composite
def timestamp_texts(draw: st.DrawFn, broken: bool) -> str | None:
    if broken and draw(st.integers(0, 7)) == 0:
        return draw(
            st.sampled_from(
                [
                    None,  # no timeStamp element
                    "2026-03-29T02:30:00",  # no zone
                    "9999-12-31T23:59:59-14:00",  # beyond the instants Python holds
                    "0001-01-01T00:00:00+14:00",
                ]
            )
        )
    text = draw(instants()).isoformat()
    return text.replace("+00:00", "Z") if draw(st.booleans()) else text


#: texts a value may not be (None: no value element), or an odd one it may be
BAD_VALUES = [None, "", "NaN", "Infinity", "-inf", "x1", "1,5", "1e999999", "\u00a0", "sNaN"]
#: timestamps a reading may not have, and odd ones it may
BAD_TIMESTAMPS = [
    "2026-03-29T02:30:00",
    "9999-12-31T23:59:59-14:00",
    "0001-01-01T00:00:00+14:00",
    "2026-10-25T02:30:00.5+01:00",
]


@st.composite
def value_texts(draw: st.DrawFn, broken: bool) -> str | None:
    if broken and draw(st.integers(0, 7)) == 0:
        return draw(st.sampled_from(BAD_VALUES))
    value = draw(
        st.decimals(allow_nan=False, allow_infinity=False, min_value=-(10**9), max_value=10**9)
    )
    text = draw(st.sampled_from([str(value), value_text(value), format(value, "E")]))
    pad = draw(st.sampled_from(["", " ", "\n  ", "\u00a0"]))
    return f"{pad}{text}{pad}" if draw(st.integers(0, 5)) == 0 else text


def element(tag: str, text: str | None) -> str:
    return "" if text is None else f"<m:{tag}>{escape(text)}</m:{tag}>"


@st.composite
def quality_xml(draw: st.DrawFn, broken: bool) -> str:
    out = []
    for _ in range(draw(st.integers(0, 2))):
        pool = QUALITIES + BAD_QUALITIES if broken else QUALITIES
        code = draw(st.sampled_from(pool))
        notes = ""
        if draw(st.booleans()):
            notes += element("comment", draw(st.none() | texts))
            notes += element("source", draw(st.none() | texts))
            stamp = draw(st.none() | instants())
            notes += element("timeStamp", stamp.isoformat() if stamp else None)
        out.append(
            f"<m:ReadingQualities>{notes}<m:ReadingQualityType ref={quoteattr(code)}/>"
            "</m:ReadingQualities>"
        )
    return "".join(out)


@st.composite
def interval_reading_xml(draw: st.DrawFn, broken: bool, qualities: bool) -> str:
    source = element("source", draw(st.none() | texts)) if draw(st.integers(0, 5)) == 0 else ""
    return (
        "<m:IntervalReadings>"
        + source
        + element("timeStamp", draw(timestamp_texts(broken)))
        + element("value", draw(value_texts(broken)))
        + (draw(quality_xml(broken)) if qualities else "")
        + "</m:IntervalReadings>"
    )


@st.composite
def meter_reading_xml(draw: st.DrawFn, broken: bool) -> str:
    rt_pool = [RT_15, RT_60, RT_REGISTER] + (BAD_RTS if broken else [])
    out = ["<m:MeterReading>"]
    # most documents regular (the fast path's shape), some with qualities
    qualities = draw(st.integers(0, 3)) == 0
    for _ in range(draw(st.integers(0, 3))):
        size = draw(st.integers(0, 10))
        readings = [draw(interval_reading_xml(broken, qualities)) for _ in range(size)]
        rt = draw(st.sampled_from(rt_pool))
        out.append(f"<m:IntervalBlocks>{''.join(readings)}<m:ReadingType ref={quoteattr(rt)}/>")
        out.append("</m:IntervalBlocks>")
    meter = draw(st.sampled_from(["mrid", "mrid", "mrid", "names", "both", "none", "blank"]))
    if meter == "none" and not broken:
        meter = "mrid"
    ident = draw(st.from_regex(r"[A-Z]{1,3}-[0-9]{1,4}", fullmatch=True))
    mrid = f"<m:mRID>{ident}</m:mRID>"
    kind = draw(st.sampled_from(["", "<m:NameType><m:name>MeterUniqueID</m:name></m:NameType>"]))
    names = f"<m:Names><m:name> N{ident} </m:name>{kind}</m:Names>"
    body = {
        "mrid": mrid,
        "names": names,
        "both": mrid + names,
        "none": None,
        "blank": "<m:mRID> </m:mRID>" + names,
    }[meter]
    if body is not None:
        out.append(f"<m:Meter>{body}</m:Meter>")
    for _ in range(draw(st.integers(0, 2))):
        reason = element("reason", draw(st.none() | texts))
        rt = draw(st.sampled_from([RT_REGISTER, RT_REGISTER_2, *(BAD_RTS if broken else [])]))
        out.append(
            "<m:Readings>"
            + reason
            + element("timeStamp", draw(timestamp_texts(broken)))
            + element("value", draw(value_texts(broken)))
            + draw(quality_xml(broken))
            + f"<m:ReadingType ref={quoteattr(rt)}/></m:Readings>"
        )
    out.append("</m:MeterReading>")
    return "".join(out)


@st.composite
def documents(draw: st.DrawFn, broken: bool | None = None) -> bytes:
    """A whole created MeterReadings message, schema-valid; with content errors when
    ``broken`` (drawn when None)."""
    if broken is None:
        broken = draw(st.booleans())
    items = [draw(meter_reading_xml(broken)) for _ in range(draw(st.integers(0, 4)))]
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<EventMessage xmlns="{MESSAGE_NS}" '
        f'xmlns:m="{MR_NS}"><Header><Verb>created</Verb><Noun>MeterReadings</Noun>'
        "<Timestamp>2026-01-01T00:00:00Z</Timestamp><Source>tests</Source>"
        "<MessageID>m-1</MessageID></Header><Payload><m:MeterReadings>"
        + "".join(items)
        + "</m:MeterReadings></Payload></EventMessage>"
    ).encode()


# -- reading -----------------------------------------------------------------------------------


Outcome = tuple[Any, ...]


def flat(chunks: Iterable[Chunk]) -> list[Any]:
    """Chunks with their cuts, every value as text (Decimal equality ignores exponents)."""
    return [
        (
            [
                (b.item, b.reading_type, [(t.isoformat(), str(v), q) for t, v, q in b.readings])
                for b in c.blocks
            ],
            c.meters,
        )
        for c in chunks
    ]


def read(
    how: Callable[[MeterReadingsReader], Iterable[Chunk]], limit: int, chunk_rows: int
) -> Outcome:
    reader = MeterReadingsReader(BASE, STORED_QUALITIES, limit, chunk_rows)
    try:
        chunks = list(how(reader))
    except PayloadInvalid as exc:
        return ("refused", exc.code, [(e.code, e.reason, e.xpath) for e in exc.errors])
    return ("read", flat(chunks), reader.meters, reader.readings_seen)


def payload_of(data: bytes) -> etree._Element:
    tree = parse_bytes(data)
    assert schemas.validate(tree) == [], "the generator makes schema-valid documents"
    payload = envelope.parse_message(tree.getroot()).payload
    assert payload is not None
    return payload


def exact_tree(payload: etree._Element) -> Callable[[MeterReadingsReader], Iterable[Chunk]]:
    def how(reader: MeterReadingsReader) -> Iterable[Chunk]:
        return reader._read(etree.iterwalk(payload, events=("end",), tag=STREAM_TAGS), free=False)

    return how


def stream(data: bytes) -> Callable[[MeterReadingsReader], Iterable[Chunk]]:
    def how(reader: MeterReadingsReader) -> Iterable[Chunk]:
        events = iterparse(
            LimitedReader(io.BytesIO(data), 10_000_000),
            schema=schemas.message_schema(),
            events=("end",),
            tags=STREAM_TAGS,
        )
        return reader.read_events(events)

    return how


LIMITS = st.sampled_from([8, 200_000])  # 8: some blocks exceed max_block_readings (2013)
CHUNK_ROWS = st.sampled_from([1, 7, 1 << 62])


@settings(max_examples=50)
@given(data=documents(), limit=LIMITS, chunk_rows=CHUNK_ROWS)
def test_tree_fast_path_equals_the_exact_path(data: bytes, limit: int, chunk_rows: int) -> None:
    payload = payload_of(data)
    exact = read(exact_tree(payload), limit, chunk_rows)
    assert read(lambda r: r.read_tree(payload), limit, chunk_rows) == exact
    fast_reader = MeterReadingsReader(BASE, STORED_QUALITIES, limit, chunk_rows)
    fast = fast_reader._tree_fast(payload)
    if fast is None:
        assert fast_reader.meters == {}  # nothing changed
        assert fast_reader.readings_seen == 0
    else:
        assert exact[0] == "read"
        assert ("read", flat(fast), fast_reader.meters, fast_reader.readings_seen) == exact


@settings(max_examples=60)
@given(
    data=documents(broken=False),
    bad=st.sampled_from([v for v in BAD_VALUES if v is not None] + BAD_TIMESTAMPS),
    which=st.integers(0, 1000),
    chunk_rows=CHUNK_ROWS,
)
def test_one_odd_text_in_a_regular_document(
    data: bytes, bad: str, which: int, chunk_rows: int
) -> None:
    """A regular document (the fast path's shape) with one value or timestamp replaced:
    the fast path gives what the exact path gives, errors included, and so does the
    stream."""
    tag = b"timeStamp" if bad in BAD_TIMESTAMPS else b"value"
    found = list(re.finditer(rb"<m:" + tag + rb">([^<]*)</m:" + tag + rb">", data))
    if found:
        at = found[which % len(found)]
        data = data[: at.start(1)] + escape(bad).encode() + data[at.end(1) :]
    payload = payload_of(data)
    exact = read(exact_tree(payload), 200_000, chunk_rows)
    assert read(lambda r: r.read_tree(payload), 200_000, chunk_rows) == exact
    fast_reader = MeterReadingsReader(BASE, STORED_QUALITIES, 200_000, chunk_rows)
    fast = fast_reader._tree_fast(payload)
    if fast is not None:
        assert ("read", flat(fast), fast_reader.meters, fast_reader.readings_seen) == exact
    assert read(stream(data), 200_000, chunk_rows) == exact


@settings(max_examples=20)
@given(data=documents(broken=False), chunk_rows=CHUNK_ROWS)
def test_regular_documents_take_the_fast_path(data: bytes, chunk_rows: int) -> None:
    """Without qualities or registers, a valid document never needs the exact path."""
    payload = payload_of(data)
    regular = payload.find(f".//{{{MR_NS}}}Readings") is None and (
        payload.find(f".//{{{MR_NS}}}ReadingQualities") is None
    )
    fast = MeterReadingsReader(BASE, STORED_QUALITIES, 200_000, chunk_rows)._tree_fast(payload)
    if regular:
        assert fast is not None
    assert read(lambda r: r.read_tree(payload), 200_000, chunk_rows) == read(
        exact_tree(payload), 200_000, chunk_rows
    )


@settings(max_examples=40)
@given(data=documents(), limit=LIMITS, chunk_rows=CHUNK_ROWS)
def test_the_stream_reads_what_the_tree_reads(data: bytes, limit: int, chunk_rows: int) -> None:
    tree = read(lambda r: r.read_tree(payload_of(data)), limit, chunk_rows)
    assert read(stream(data), limit, chunk_rows) == tree


def whole(how: Callable[[], Outcome]) -> Outcome:
    try:
        return how()
    except AmihubError as exc:
        return ("error", getattr(exc, "code", type(exc).__name__))


def tree_path(data: bytes) -> Outcome:
    tree = parse_bytes(data)
    problems = schemas.validate(tree)
    if problems:
        return ("error", "1005")
    payload = envelope.parse_message(tree.getroot()).payload
    if payload is None or payload.tag != f"{{{MR_NS}}}MeterReadings":
        return ("no payload",)
    return read(lambda r: r.read_tree(payload), 200_000, 1 << 62)


@st.composite
def broken_bytes(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(documents()))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data) - 1))
        edit = draw(st.sampled_from(["cut", "delete", "insert", "repeat"]))
        if edit == "cut":
            del data[at:]
        elif edit == "delete":
            del data[at : at + draw(st.integers(1, 12))]
        elif edit == "insert":
            data[at:at] = draw(
                st.sampled_from(
                    [b"<", b"&", b"]]>", b"</m:value>", b"<m:value>1</m:value>", b"\xff", b"x"]
                )
            )
        else:
            end = min(len(data), at + draw(st.integers(1, 40)))
            data[at:at] = data[at:end] * draw(st.integers(1, 3))
        if not data:
            data += b"<"
    return bytes(data)


def header_seen(data: bytes) -> bool:
    """Whether the Header ends in the first 64 KiB: the stream path (hub/pipeline.py)
    refuses a file before its Payload otherwise (HeaderInvalid), the codec never sees it."""
    try:
        return any(
            event == "end" and etree.QName(el).localname == "Header"
            for event, el in pull_events(LimitedReader(io.BytesIO(data), 10_000_000).peek())
        )
    except AmihubError:
        return False


@settings(max_examples=50)
@given(data=broken_bytes())
def test_broken_documents_are_refused_alike_on_both_paths(data: bytes) -> None:
    tree = whole(lambda: tree_path(data))
    if not header_seen(data):
        assert tree[0] == "error"  # refused before the payload on both paths
        return
    streamed = whole(lambda: read(stream(data), 200_000, 1 << 62))
    if tree == ("no payload",):
        assert streamed[0] in ("read", "error")  # nothing read either way
        if streamed[0] == "read":
            assert streamed[1] == [([], [])]
        return
    if tree[0] == "error" or streamed[0] == "error":
        # refused by the XML layer before the codec (not well-formed, schema): both refuse;
        # the code may differ: a file cut inside its Payload is 1001 on the tree path and
        # often 1005 streamed (libxml2 closes the open elements and validates them first)
        assert tree[0] == streamed[0] == "error"
        return
    assert streamed == tree  # the codec's readings, or its errors, the same


# -- writing -------------------------------------------------------------------------------------


Row = tuple[str, str, str, str, str]


@st.composite
def quality_texts(draw: st.DrawFn, register: bool) -> str:
    codes = draw(st.lists(st.sampled_from(QUALITIES), max_size=2))
    if not draw(st.booleans()):
        return ",".join(codes)
    notes = [
        QualityNote(
            code,
            draw(st.none() | texts),
            draw(st.none() | texts),
            draw(st.none() | instants().map(datetime.isoformat)),
        )
        for code in codes
    ]
    reason = draw(st.none() | texts) if register else None
    return STORED_QUALITIES.pack(notes, reason)


@st.composite
def reply_rows(draw: st.DrawFn) -> list[Row]:
    """Rows as the store gives them: by meter, ReadingType and time, one per key."""
    rows: list[Row] = []
    meters = draw(
        st.lists(
            st.from_regex(r"[A-Z]{1,3}-[0-9&<>]{1,4}", fullmatch=True), max_size=3, unique=True
        )
    )
    for meter in sorted(meters):
        rts = draw(
            st.lists(st.sampled_from([RT_15, RT_60, RT_REGISTER, RT_REGISTER_2]), unique=True)
        )
        for rt in sorted(rts):
            at = draw(st.lists(instants(), max_size=6, unique_by=lambda d: d.astimezone(UTC)))
            for ts in sorted(at, key=lambda d: d.astimezone(UTC)):
                value = draw(st.decimals(allow_nan=False, allow_infinity=False))
                quality = draw(quality_texts(register=rt in (RT_REGISTER, RT_REGISTER_2)))
                rows.append((meter, rt, ts.isoformat(), value_text(value), quality))
    return rows


def written(rows: list[Row], *, raw: bool) -> bytes:
    out = io.BytesIO()
    with etree.xmlfile(out, encoding="UTF-8") as xf:
        count = write_readings(xf, rows, STORED_QUALITIES, raw=out if raw else None)
    assert count == len(rows)
    return out.getvalue()


def c14n(document: bytes) -> str:
    return str(etree.canonicalize(document.decode()))


@settings(max_examples=40)
@given(rows=reply_rows())
def test_the_text_writer_equals_the_element_writer_and_reads_back(rows: list[Row]) -> None:
    fast, exact = written(rows, raw=True), written(rows, raw=False)
    assert c14n(fast) == c14n(exact)
    element, count = render_readings(rows, STORED_QUALITIES)
    assert count == len(rows)
    assert c14n(etree.tostring(element)) == c14n(fast)
    reader = MeterReadingsReader("/MeterReadings", STORED_QUALITIES, 200_000, 1 << 62)
    back = [
        (str(reader.meters[b.item]), b.reading_type, ts, str(v), q)
        for c in reader.read_tree(etree.fromstring(fast))
        for b in c.blocks
        for ts, v, q in b.readings
    ]
    expected = [
        (m, rt, datetime.fromisoformat(ts).astimezone(UTC), str(Decimal(v)), q)
        for m, rt, ts, v, q in rows
    ]
    assert sorted(back, key=repr) == sorted(expected, key=repr)
    assert reader.readings_seen == len(rows)
