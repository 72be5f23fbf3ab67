"""get MeterReadings through the pipeline on the embedded store (memory adapter, SQLite)."""

from __future__ import annotations

import io
import tracemalloc
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from lxml import etree

from adapters.memory import MemoryAdapter
from cim_schemas import schemas
from cim_schemas.envelope import Header, RequestInfo, render_request
from cim_schemas.meter_readings import render_readings, write_readings
from cim_schemas.namespaces import GET_METER_READINGS_MESSAGE_NS, MESSAGE_NS, profile_ns
from cim_schemas.profiles._common import DateTimeInterval, IdentifiedObject
from cim_schemas.profiles.get_meter_readings import GetMeterReadings, render_get_meter_readings
from hub.bootstrap import App
from hub.messages import InboundMessage
from hub.nouns.get_meter_readings import GetMeterReadingsRoute, as_text
from hub.readings_codec import STORED_QUALITIES
from hub.samples import RT_15MIN_A_PLUS, RT_A_PLUS_TOTAL, meter_readings_bytes
from mdm.model import StoredReading
from tests.unit.hub.conftest import START, add_meters, make_app

MR = profile_ns("MeterReadings")
NS = {"m": MESSAGE_NS, "mr": MR, "g": GET_METER_READINGS_MESSAGE_NS}
DAY = timedelta(days=1)


def get_request(
    *,
    devices: tuple[IdentifiedObject, ...] = (),
    usage_points: tuple[IdentifiedObject, ...] = (),
    reading_types: tuple[str, ...] = (),
    schedule: tuple[datetime, datetime] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    style: str = "wrapper",
    message_id: str | None = None,
) -> bytes:
    profile = GetMeterReadings(
        end_devices=devices,
        usage_points=usage_points,
        reading_types=tuple(IdentifiedObject(mrid=c) for c in reading_types),
        time_schedules=(DateTimeInterval(*schedule),) if schedule else (),
    )
    header = Header(verb="get", noun="MeterReadings", message_id=message_id)
    request = RequestInfo(start_time=start, end_time=end, get=render_get_meter_readings(profile))
    return render_request(header, request, style=style)  # type: ignore[arg-type]


def by_mrid(*mrids: str) -> tuple[IdentifiedObject, ...]:
    return tuple(IdentifiedObject(mrid=m) for m in mrids)


@pytest.fixture
def app(sqlite_url: str) -> Iterator[App]:
    application = make_app(sqlite_url)
    add_meters(application, "MTR-1", "MTR-2")
    yield application
    application.close()


@pytest.fixture
def loaded(app: App) -> App:
    """MTR-1 and MTR-2 with two days of 15-minute data and a register at the end."""
    adapter = MemoryAdapter(app.pipeline)
    outcome = adapter.request(meter_readings_bytes(["MTR-1", "MTR-2"], START, 192))
    assert outcome.result == "OK", outcome.errors
    return app


def reply_tree(body: bytes) -> etree._Element:
    tree = etree.fromstring(body)
    problems = schemas.validate(tree)
    assert problems == [], problems
    return tree


def stamps(reply: etree._Element) -> list[str]:
    return reply.xpath("//mr:IntervalReadings/mr:timeStamp/text()", namespaces=NS)  # type: ignore[return-value]


def test_one_meter_day_by_mrid_is_start_exclusive_end_inclusive(loaded: App) -> None:
    body = get_request(devices=by_mrid("MTR-1"), schedule=(START, START + DAY))
    outcome = MemoryAdapter(loaded.pipeline).request(body)
    assert outcome.result == "OK", outcome.errors
    reply = reply_tree(outcome.reply)
    assert (
        etree.QName(reply).text
        == f"{{{GET_METER_READINGS_MESSAGE_NS}}}MeterReadingsResponseMessage"
    )
    ts = stamps(reply)
    assert len(ts) == 96
    assert datetime.fromisoformat(ts[0]) == START + timedelta(minutes=15)
    assert datetime.fromisoformat(ts[-1]) == START + DAY
    assert reply.xpath("//mr:MeterReading/mr:Meter/mr:mRID/text()", namespaces=NS) == ["MTR-1"]
    assert reply.xpath("//mr:IntervalBlocks/mr:ReadingType/@ref", namespaces=NS) == [
        RT_15MIN_A_PLUS
    ]
    assert outcome.counts["readings"] == 96


def test_generic_request_message_and_request_times(loaded: App) -> None:
    body = get_request(
        devices=by_mrid("MTR-2"),
        start=START + DAY,
        end=START + 2 * DAY,
        style="envelope",
        message_id="get-1",
    )
    outcome = MemoryAdapter(loaded.pipeline).request(body)
    assert outcome.result == "OK", outcome.errors
    reply = reply_tree(outcome.reply)
    assert etree.QName(reply).localname == "ResponseMessage"
    assert reply.findtext("m:Header/m:CorrelationID", namespaces=NS) == "get-1"
    ts = stamps(reply)
    assert len(ts) == 96
    assert datetime.fromisoformat(ts[0]) == START + DAY + timedelta(minutes=15)
    # the register stamped at the end of the second day is in (start, end]
    regs = reply.xpath("//mr:Readings/mr:ReadingType/@ref", namespaces=NS)
    assert regs == [RT_A_PLUS_TOTAL]
    # Meter comes after IntervalBlocks and before Readings
    mr = reply.find(".//mr:MeterReading", namespaces=NS)
    assert mr is not None
    assert [etree.QName(c).localname for c in mr] == ["IntervalBlocks", "Meter", "Readings"]


def test_by_name_usage_point_and_reading_type(loaded: App) -> None:
    adapter = MemoryAdapter(loaded.pipeline)
    named = get_request(
        devices=(IdentifiedObject.by_name("name-MTR-1"),), schedule=(START, START + DAY / 4)
    )
    outcome = adapter.request(named)
    assert outcome.result == "OK", outcome.errors
    assert len(stamps(reply_tree(outcome.reply))) == 24
    up = get_request(
        usage_points=by_mrid("UP-MTR-2"),
        reading_types=(RT_A_PLUS_TOTAL,),
        schedule=(START, START + 2 * DAY),
    )
    outcome = adapter.request(up)
    assert outcome.result == "OK", outcome.errors
    reply = reply_tree(outcome.reply)
    assert stamps(reply) == []
    assert reply.xpath("//mr:Meter/mr:mRID/text()", namespaces=NS) == ["MTR-2"]
    assert reply.xpath("//mr:Readings/mr:timeStamp/text()", namespaces=NS) == [
        (START + 2 * DAY).isoformat()
    ]


def test_unknown_meters_get_an_error_each(loaded: App) -> None:
    adapter = MemoryAdapter(loaded.pipeline)
    body = get_request(devices=by_mrid("MTR-1", "NOPE-1", "NOPE-2"), schedule=(START, START + DAY))
    outcome = adapter.request(body)
    assert outcome.result == "PARTIAL"
    reply = reply_tree(outcome.reply)
    assert reply.findtext("g:Reply/m:Result", namespaces=NS) == "PARTIAL"
    errors = reply.findall("g:Reply/m:Error", namespaces=NS)
    assert [e.findtext("m:code", namespaces=NS) for e in errors] == ["2001", "2001"]
    assert [e.findtext("m:ID", namespaces=NS) for e in errors] == ["NOPE-1", "NOPE-2"]
    assert [(e.get("kind"), e.get("objectType")) for e in reply.findall(".//m:Error/m:ID", NS)] == [
        ("uuid", "EndDevice"),
        ("uuid", "EndDevice"),
    ]
    assert errors[1].find("m:xpath", namespaces=NS) is None  # an xs:QName in 61968-100
    assert errors[1].findtext("m:details", namespaces=NS) == (
        "/GetMeterReadings/Request/GetMeterReadings/EndDevice[3]"
    )
    assert len(stamps(reply)) == 96
    only_unknown = adapter.request(get_request(devices=by_mrid("NOPE-1")))
    assert only_unknown.result == "FAILED"
    assert [e.code for e in only_unknown.errors] == ["2001"]
    reply_tree(only_unknown.reply)
    # an answer to a get is not an input to fix and replay: no dead letters
    assert outcome.dead_letter_id is None
    assert only_unknown.dead_letter_id is None


def test_groups_and_inverted_periods_are_refused_with_xpaths(loaded: App) -> None:
    adapter = MemoryAdapter(loaded.pipeline)
    outcome = adapter.request(get_request(devices=by_mrid("MTR-1"), schedule=(START + DAY, START)))
    assert outcome.result == "FAILED"
    assert outcome.errors[0].code == "2013"
    assert outcome.errors[0].xpath == "/GetMeterReadings/Request/GetMeterReadings/TimeSchedule[1]"
    outcome = adapter.request(get_request(reading_types=(RT_A_PLUS_TOTAL,)))
    assert outcome.result == "FAILED"
    assert outcome.errors[0].code == "2011"


def _year(mrid: str, n: int) -> Iterator[StoredReading]:
    from decimal import Decimal

    ts = START
    step = timedelta(minutes=15)
    for i in range(n):
        ts += step
        yield StoredReading(mrid, RT_15MIN_A_PLUS, ts, Decimal(i) / 1000, "", 1, START)


def test_meter_year_streams_with_bounded_memory(app: App) -> None:
    """write_reply: 35,040 values written incrementally; peak Python memory stays small."""

    class Sink(io.RawIOBase):
        written = 0

        def writable(self) -> bool:
            return True

        def write(self, b: object) -> int:
            n = len(b)  # type: ignore[arg-type]
            self.written += n
            return n

    sink = Sink()
    tracemalloc.start()
    with etree.xmlfile(sink, encoding="UTF-8") as xf:
        count = write_readings(xf, as_text(_year("MTR-1", 35_040)), STORED_QUALITIES)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == 35_040
    assert sink.written > 3_000_000
    # 35,040 readings (~3.7 MB of XML) pass through well under 1 MB of Python memory
    assert peak < 1024 * 1024, peak
    tree_el, n = render_readings(as_text(_year("MTR-1", 96)), STORED_QUALITIES)
    assert n == 96
    assert len(tree_el.findall(f".//{{{MR}}}IntervalReadings")) == 96


def test_write_reply_equals_tree_reply(loaded: App) -> None:
    """The streaming writer (text rows from the store) produces the same readings as the
    tree reply (StoredReading objects, lxml elements)."""
    from datetime import UTC

    from cim_schemas.envelope import parse_message
    from hub.routing import MessageFrame, RouteContext
    from mdm.handlers import HandlerContext

    body = get_request(devices=by_mrid("MTR-1", "NOPE"), schedule=(START, START + 2 * DAY))
    parsed = parse_message(etree.fromstring(body))
    assert parsed.header is not None
    frame = MessageFrame(parsed.header, parsed.style, parsed.root_name, request=parsed.request)
    out = io.BytesIO()
    with loaded.uow_factory() as uow:
        ctx = RouteContext(1, "DEFAULT", HandlerContext("t", datetime.now(UTC)), loaded.bus)
        result = GetMeterReadingsRoute().write_reply(out, frame, ctx, uow)
        tree_result = GetMeterReadingsRoute().handle(frame, ctx, uow)
    assert result.result == tree_result.result == "PARTIAL"
    reply = reply_tree(out.getvalue())
    assert tree_result.payload is not None
    tree = tree_result.payload

    def values(el: etree._Element) -> list[tuple[str, str]]:
        return [
            (
                r.findtext("mr:timeStamp", namespaces=NS) or "",
                r.findtext("mr:value", namespaces=NS) or "",
            )
            for r in el.iterfind(".//mr:IntervalReadings", namespaces=NS)
        ]

    assert len(values(reply)) == 192
    assert values(reply) == values(tree)
    assert reply.xpath("//mr:Readings/mr:value/text()", namespaces=NS) == tree.xpath(
        "//mr:Readings/mr:value/text()", namespaces=NS
    )


def test_a_get_is_logged_once_answered_with_its_lifecycle_and_reply_digest(loaded: App) -> None:
    """One message-log row (no stored reply: its size and SHA-256 in the last step)."""
    import hashlib

    body = get_request(devices=by_mrid("MTR-1"), schedule=(START, START + DAY), message_id="g-1")
    outcome = MemoryAdapter(loaded.pipeline).request(body, source="cis")
    assert outcome.result == "OK"
    assert outcome.message_log_id is not None
    with loaded.uow_factory() as uow:
        row = uow.messages.get(outcome.message_log_id)
        steps = uow.messages.lifecycle(outcome.message_log_id)
    assert row is not None
    assert (row.source, row.message_id, row.verb, row.noun) == (
        "cis",
        "g-1",
        "get",
        "MeterReadings",
    )
    assert (row.state, row.result, row.reply) == ("replied", "OK", None)
    assert row.content_hash == hashlib.sha256(body).hexdigest()
    assert [s for s, _, _ in steps] == ["received", "validated", "dispatched", "replied"]
    assert [at for _, at, _ in steps] == sorted(at for _, at, _ in steps)
    digest = hashlib.sha256(outcome.reply).hexdigest()
    assert steps[-1][2] == f"OK; reply of {len(outcome.reply)} bytes, sha256:{digest}"


def test_a_get_repeated_with_its_message_id_is_answered_again(loaded: App) -> None:
    """A get is safe to repeat: no stored reply is looked up; the repetition is logged
    without claiming the MessageID twice, and a change may not reuse it."""
    adapter = MemoryAdapter(loaded.pipeline)
    body = get_request(devices=by_mrid("MTR-1"), schedule=(START, START + DAY), message_id="g-2")
    first = adapter.request(body, source="cis")
    again = adapter.request(body, source="cis")
    assert (first.result, again.result) == ("OK", "OK")
    assert not again.duplicate
    assert stamps(reply_tree(again.reply)) == stamps(reply_tree(first.reply))
    assert again.message_log_id != first.message_log_id
    with loaded.uow_factory() as uow:
        row = uow.messages.get(again.message_log_id or 0)
        steps = uow.messages.lifecycle(again.message_log_id or 0)
    assert row is not None
    assert row.message_id is None
    assert (
        "dispatched",
        "get MeterReadings; MessageID g-2 repeated (already logged for this source)",
    ) in [(s, d) for s, _, d in steps]
    change = adapter.request(
        meter_readings_bytes(["MTR-1"], START, 4, message_id="g-2"), source="cis"
    )
    assert change.result == "FAILED"
    assert change.errors[0].code == "1007"


def test_a_refused_get_is_recorded_and_kept_by_the_full_path(loaded: App) -> None:
    """Bad input on the read path: the refusal names what and where, the message log has
    its history and the input is kept (dead letter)."""
    body = get_request(devices=(IdentifiedObject(),), schedule=(START, START + DAY))
    outcome = MemoryAdapter(loaded.pipeline).request(body, source="cis")
    assert outcome.result == "FAILED"
    assert outcome.errors[0].code == "2011"
    assert outcome.errors[0].xpath == "/GetMeterReadings/Request/GetMeterReadings/EndDevice[1]"
    assert outcome.dead_letter_id is not None
    with loaded.uow_factory() as uow:
        steps = uow.messages.lifecycle(outcome.message_log_id or 0)
        kept = uow.dead_letters.get(outcome.dead_letter_id)
    assert [s for s, _, _ in steps] == ["received", "dead_lettered"]
    assert kept is not None
    assert kept.body == body


def test_a_large_reply_comes_back_in_chunks_when_the_adapter_streams(loaded: App) -> None:
    """Over the spool's memory limit, a reply for an adapter that streams is a temp file
    read back in chunks; the same reply for an adapter that does not comes as bytes."""
    pipeline = loaded.pipeline
    pipeline.reply_memory_bytes = 4096
    body = get_request(devices=by_mrid("MTR-1", "MTR-2"), schedule=(START, START + 2 * DAY))
    streamed = pipeline.process(
        InboundMessage(source="cis", endpoint="t", body=body, stream_reply=True)
    )
    whole = pipeline.process(InboundMessage(source="cis", endpoint="t", body=body))
    assert streamed.reply == b""
    assert streamed.reply_chunks is not None
    data = b"".join(streamed.reply_chunks)
    assert len(data) == streamed.reply_size > 4096
    assert whole.reply_chunks is None
    assert len(stamps(reply_tree(data))) == 384
    assert stamps(reply_tree(data)) == stamps(reply_tree(whole.reply))


def test_a_failure_on_the_read_path_is_answered_by_the_full_path(
    loaded: App, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing of the read path is kept when it fails midway (its transaction rolls
    back); the general path answers the same get with its own bookkeeping."""

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("broken writer")

    monkeypatch.setattr(GetMeterReadingsRoute, "write_reply", broken)
    body = get_request(devices=by_mrid("MTR-1"), schedule=(START, START + DAY), message_id="g-3")
    outcome = MemoryAdapter(loaded.pipeline).request(body, source="cis")
    assert outcome.result == "OK"
    assert len(stamps(reply_tree(outcome.reply))) == 96
    assert "failed on the read path" in caplog.text
    with loaded.uow_factory() as uow:
        row = uow.messages.find("cis", "g-3")
        assert row is not None
        steps = [s for s, _, _ in uow.messages.lifecycle(row.id)]
    assert row.id == outcome.message_log_id
    assert steps == ["received", "validated", "dispatched", "replied"]
