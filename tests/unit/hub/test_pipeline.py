"""The hub pipeline end to end on the embedded store, driven by the memory adapter."""

from __future__ import annotations

import tracemalloc
from datetime import timedelta
from pathlib import Path

import pytest
from lxml import etree

from adapters.memory import MemoryAdapter
from cim_schemas.namespaces import MESSAGE_NS
from hub.bootstrap import App
from hub.lifecycle import MessageLifecycle
from hub.messages import InboundMessage
from hub.replay import replay
from hub.samples import RT_15MIN_A_PLUS, meter_readings_bytes, write_meter_readings
from mdm.model import DeviceRef
from tests.unit.hub.conftest import START, add_meters, make_app, reading_count

NS = {"m": MESSAGE_NS}


def reply_of(outcome_reply: bytes) -> etree._Element:
    return etree.fromstring(outcome_reply)


def test_readings_are_stored_and_replied_ok(app: App) -> None:
    body = meter_readings_bytes(["MTR-1", "MTR-2"], START, 96)
    outcome = MemoryAdapter(app.pipeline).request(body, source="hes-a")
    assert outcome.result == "OK", outcome.errors
    assert outcome.counts["stored"] == 2 * 96 + 2
    assert reading_count(app) == 2 * 96 + 2
    reply = reply_of(outcome.reply)
    assert reply.findtext("m:Reply/m:Result", namespaces=NS) == "OK"
    assert reply.findtext("m:Header/m:CorrelationID", namespaces=NS) == outcome.message_id
    with app.uow_factory() as uow:
        states = [s for s, _, _ in uow.messages.lifecycle(outcome.message_log_id or 0)]
    assert states == [
        MessageLifecycle.RECEIVED,
        MessageLifecycle.VALIDATED,
        MessageLifecycle.DISPATCHED,
        MessageLifecycle.REPLIED,
    ]


def test_edit_supersedes_and_keeps_the_old_version(app: App) -> None:
    adapter = MemoryAdapter(app.pipeline)
    adapter.request(meter_readings_bytes(["MTR-1"], START, 4, registers=False, seed=1))
    fix = adapter.request(
        meter_readings_bytes(["MTR-1"], START, 4, registers=False, seed=2, verb="changed")
    )
    assert fix.result == "OK"
    assert fix.counts["superseded"] == 4
    with app.uow_factory() as uow:
        device = uow.devices.find(1, DeviceRef(mrid="MTR-1"))
        assert device is not None
        assert device.id is not None
        versions = uow.readings.versions(device.id, RT_15MIN_A_PLUS, START + timedelta(minutes=15))
    assert [v.version for v in versions] == [2, 1]
    assert versions[0].value != versions[1].value


def test_same_message_id_returns_the_stored_reply_and_writes_nothing_twice(app: App) -> None:
    adapter = MemoryAdapter(app.pipeline)
    body = meter_readings_bytes(["MTR-1"], START, 8, message_id="msg-1")
    first = adapter.request(body, source="hes-a")
    second = adapter.request(body, source="hes-a")
    assert second.duplicate
    assert second.reply == first.reply
    assert reading_count(app) == 9
    # another source may use the same MessageID
    third = adapter.request(body, source="hes-b")
    assert not third.duplicate
    assert third.counts["unchanged"] == 9


def test_message_id_replayed_with_different_content_is_refused(app: App) -> None:
    adapter = MemoryAdapter(app.pipeline)
    adapter.request(meter_readings_bytes(["MTR-1"], START, 4, message_id="msg-2"), source="s")
    before = reading_count(app)
    other = meter_readings_bytes(["MTR-2"], START, 4, message_id="msg-2")
    outcome = adapter.request(other, source="s")
    assert outcome.result == "FAILED"
    assert outcome.errors[0].code == "1007"
    assert outcome.errors[0].xpath == "/*/Header/MessageID"
    assert reading_count(app) == before
    assert outcome.dead_letter_id is not None


def _refused(app: App, body: bytes, code: str) -> str | None:
    before = reading_count(app)
    outcome = MemoryAdapter(app.pipeline).request(body)
    assert outcome.result == "FAILED", outcome
    assert outcome.errors[0].code == code, outcome.errors
    assert reading_count(app) == before
    assert outcome.dead_letter_id is not None
    with app.uow_factory() as uow:
        kept = uow.dead_letters.get(outcome.dead_letter_id)
    assert kept is not None
    assert kept.body == body  # the original input is kept whole
    reply = reply_of(outcome.reply)
    assert reply.findtext("m:Reply/m:Result", namespaces=NS) == "FAILED"
    assert reply.find("m:Reply/m:Error/m:code", namespaces=NS).text == code  # type: ignore[union-attr]
    return outcome.errors[0].xpath


def test_not_xml(app: App) -> None:
    _refused(app, b"this is not XML at all", "1001")


def test_xml_that_is_not_an_envelope(app: App) -> None:
    assert _refused(app, b"<invoice><total>3</total></invoice>", "1004") == "/invoice"


def test_schema_invalid_payload_names_the_xpath(app: App) -> None:
    body = meter_readings_bytes(["MTR-1"], START, 2).replace(
        b"<m:IntervalReadings>", b"<m:IntervalReadings><m:bogus>1</m:bogus>", 1
    )
    xpath = _refused(app, body, "1005")
    assert xpath is not None
    assert "IntervalReadings" in xpath


def test_unknown_verb_noun_pair(app: App) -> None:
    body = meter_readings_bytes(["MTR-1"], START, 2).replace(
        b"<Noun>MeterReadings</Noun>", b"<Noun>EndDeviceFirmware</Noun>"
    )
    _refused(app, body, "1006")


def test_entity_expansion_bomb(app: App) -> None:
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
        b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
        b'<RequestMessage xmlns="' + MESSAGE_NS.encode() + b'"><Header><Verb>create</Verb>'
        b"<Noun>MeterReadings</Noun><Comment>&lol3;</Comment></Header></RequestMessage>"
    )
    _refused(app, bomb, "1002")


def test_external_entity_reference(app: App) -> None:
    xxe = (
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b'<RequestMessage xmlns="' + MESSAGE_NS.encode() + b'"><Header><Verb>create</Verb>'
        b"<Noun>MeterReadings</Noun><Comment>&x;</Comment></Header></RequestMessage>"
    )
    _refused(app, xxe, "1002")


def test_500_mb_input_is_refused_unread_by_the_size_limit(sqlite_url: str, tmp_path: Path) -> None:
    app = make_app(sqlite_url, max_file_bytes=64 * 1024 * 1024)
    big = tmp_path / "big.xml"
    with big.open("wb") as f:  # sparse: 500 MB on paper, nothing on disk
        f.write(b"<RequestMessage>")
        f.truncate(500 * 1024 * 1024)
    outcome = app.pipeline.process(InboundMessage(source="t", endpoint="t", path=big))
    assert outcome.result == "FAILED"
    assert outcome.errors[0].code == "1003"
    with app.uow_factory() as uow:
        kept = uow.dead_letters.get(outcome.dead_letter_id or 0)
    assert kept is not None
    assert kept.truncated
    assert kept.metadata["path"] == str(big)  # the original stays where it was
    app.close()


def _peak_streaming(app: App, path: Path) -> int:
    tracemalloc.start()
    outcome = app.pipeline.process(InboundMessage(source="t", endpoint="t", path=path))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert outcome.result == "OK", outcome.errors
    return peak


def test_large_file_streams_within_bounded_memory(sqlite_url: str, tmp_path: Path) -> None:
    """Peak memory does not grow with the file: 3x the readings, about the same peak."""
    # files above 64 KiB stream; batches of 2,000 rows: both files exceed the buffers
    app = make_app(sqlite_url, tree_limit_bytes=64 * 1024, ingest_batch_rows=2_000)
    meters = [f"S{n:04d}" for n in range(200)]
    add_meters(app, *meters, install=False)
    small, large = tmp_path / "small.xml", tmp_path / "large.xml"
    with small.open("w") as f:
        first = write_meter_readings(f, meters[:50], START, 96, registers=False)
    with large.open("w") as f:
        written = write_meter_readings(f, meters[50:], START, 96)  # with registers
    peak_small = _peak_streaming(app, small)
    peak_large = _peak_streaming(app, large)
    assert reading_count(app) == first + written
    assert large.stat().st_size > 2.9 * small.stat().st_size
    assert peak_large < 1.5 * peak_small, (peak_small, peak_large)
    assert peak_large < 8 * 1024 * 1024  # a few batches of rows, whatever the file size
    app.close()


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        # without the schema this value would be refused as a number (2005)
        (
            b"<m:value>",
            b"<m:value><m:bad/>",
            "schema invalid: Element '{http://iec.ch/TC57/2011/MeterReadings#}value': "
            "Element content is not allowed, because the type definition is simple.",
        ),
        # without the schema this element would be skipped and the file stored
        (
            b"</m:value></m:IntervalReadings>",
            b"</m:value><m:unknownElement>1</m:unknownElement></m:IntervalReadings>",
            "schema invalid: Element '{http://iec.ch/TC57/2011/MeterReadings#}unknownElement': "
            "This element is not expected. Expected is one of "
            "( {http://iec.ch/TC57/2011/MeterReadings#}ReadingQualities, "
            "{http://iec.ch/TC57/2011/MeterReadings#}timePeriod ).",
        ),
    ],
    ids=["element-in-a-value", "unknown-element"],
)
def test_streamed_file_with_a_schema_error_stores_nothing(
    sqlite_url: str, tmp_path: Path, old: bytes, new: bytes, reason: str
) -> None:
    """The streamed path validates with the schema as it parses (iterparse's schema):
    the exact refusal is the schema's, not whatever the route makes of the element."""
    app = make_app(sqlite_url, tree_limit_bytes=1024)
    add_meters(app, "MTR-1")
    body = meter_readings_bytes(["MTR-1"], START, 50)
    assert len(body) > 1024  # streamed, not parsed whole
    path = tmp_path / "bad.xml"
    path.write_bytes(body.replace(old, new, 1))
    outcome = app.pipeline.process(InboundMessage(source="t", endpoint="t", path=path))
    assert (outcome.result, [(e.code, e.reason) for e in outcome.errors]) == (
        "FAILED",
        [("1005", reason)],
    )
    assert reading_count(app) == 0
    app.close()


@pytest.mark.parametrize("cut_after", [b"</m:IntervalReadings>", b"</m:MeterReading>"])
def test_streamed_file_cut_short_stores_nothing(
    sqlite_url: str, tmp_path: Path, cut_after: bytes
) -> None:
    """A file cut short at an element boundary (an interrupted upload) is well-formed as
    far as it goes: it is refused whole (1001), not stored in part."""
    app = make_app(sqlite_url, tree_limit_bytes=1024)
    add_meters(app, "MTR-1", "MTR-2")
    body = meter_readings_bytes(["MTR-1", "MTR-2"], START, 50)
    assert len(body) > 1024  # streamed, not parsed whole
    middle = len(body) // 2
    cut = body.index(cut_after, middle) + len(cut_after)
    path = tmp_path / "cut.xml"
    path.write_bytes(body[:cut])
    outcome = app.pipeline.process(InboundMessage(source="t", endpoint="t", path=path))
    assert (outcome.result, [e.code for e in outcome.errors]) == ("FAILED", ["1001"])
    assert "Premature end of data" in outcome.errors[0].reason
    assert reading_count(app) == 0
    app.close()


def test_reading_for_an_unknown_meter_only(app: App) -> None:
    body = meter_readings_bytes(["NOPE"], START, 4)
    outcome = MemoryAdapter(app.pipeline).request(body)
    assert outcome.result == "FAILED"
    assert outcome.errors[0].code == "2001"
    assert outcome.errors[0].xpath == "/EventMessage/Payload/MeterReadings/MeterReading[1]/Meter"
    assert reading_count(app) == 0


def test_unknown_meter_next_to_known_ones_is_partial(app: App) -> None:
    body = meter_readings_bytes(["MTR-1", "NOPE", "MTR-2"], START, 4)
    outcome = MemoryAdapter(app.pipeline).request(body)
    assert outcome.result == "PARTIAL"
    assert [(e.code, e.xpath) for e in outcome.errors] == [
        ("2001", "/EventMessage/Payload/MeterReadings/MeterReading[2]/Meter")
    ]
    assert reading_count(app) == 2 * 5
    reply = reply_of(outcome.reply)
    assert reply.findtext("m:Reply/m:Result", namespaces=NS) == "PARTIAL"


def test_bad_reading_type_code(app: App) -> None:
    body = meter_readings_bytes(["MTR-1"], START, 4, registers=False).replace(
        RT_15MIN_A_PLUS.encode(), b"0.0.2.4.1.1.12.0.0"
    )
    xpath = _refused(app, body, "2003")
    assert (
        xpath == "/EventMessage/Payload/MeterReadings/MeterReading[1]/IntervalBlocks[1]/ReadingType"
    )


def test_duplicate_readings_in_one_message(app: App) -> None:
    one = meter_readings_bytes(["MTR-1"], START, 4, registers=False)
    head, _, tail = one.partition(b"</m:IntervalBlocks>")
    block = head[head.index(b"<m:IntervalBlocks>") :] + b"</m:IntervalBlocks>"
    body = head + b"</m:IntervalBlocks>" + block + tail
    _refused(app, body, "2004")


def test_bad_value_and_timestamp_name_their_elements(app: App) -> None:
    body = meter_readings_bytes(["MTR-1"], START, 3, registers=False)
    body = body.replace(b"+00:00</m:timeStamp>", b"</m:timeStamp>", 1)  # no zone
    outcome = MemoryAdapter(app.pipeline).request(body)
    assert outcome.result == "FAILED"
    assert outcome.errors[0].code == "2006"
    assert outcome.errors[0].xpath is not None
    assert outcome.errors[0].xpath.endswith("IntervalReadings[1]/timeStamp")
    assert reading_count(app) == 0


def test_dead_letter_replay_after_the_meter_exists(app: App) -> None:
    outcome = MemoryAdapter(app.pipeline).request(meter_readings_bytes(["LATE"], START, 4))
    assert outcome.result == "FAILED"
    assert outcome.dead_letter_id is not None
    add_meters(app, "LATE")
    again = replay(app, outcome.dead_letter_id)
    assert again.result == "OK"
    assert reading_count(app) == 5
    with app.uow_factory() as uow:
        kept = uow.dead_letters.get(outcome.dead_letter_id)
    assert kept is not None
    assert kept.resolved_at is not None
    assert kept.replay_count == 1


def test_queued_mode_replies(app: App) -> None:
    adapter = MemoryAdapter(app.pipeline)
    adapter.start()
    try:
        adapter.post(meter_readings_bytes(["MTR-1"], START, 4))
        adapter.post(b"garbage")
        results = sorted(adapter.replies().result for _ in range(2))
    finally:
        adapter.stop()
    assert results == ["FAILED", "OK"]


def test_a_principal_without_permission_is_refused_and_audited(app: App) -> None:
    from hub.security import Permission, Principal

    reader = Principal("billing", None, frozenset({Permission.parse("get:*")}))
    body = meter_readings_bytes(["MTR-1"], START, 2)
    outcome = app.pipeline.process(
        InboundMessage(source="billing", endpoint="t", body=body, principal=reader)
    )
    assert outcome.result == "FAILED"
    assert outcome.errors[0].code == "1010"
    assert reading_count(app) == 0
    with app.uow_factory() as uow:
        audit = uow.audit.list()
    assert any(a[1] == "billing" and a[2] == "refused" for a in audit), audit
    writer = Principal("hes", None, frozenset({Permission.parse("created:MeterReadings")}))
    ok = app.pipeline.process(
        InboundMessage(source="hes", endpoint="t", body=body, principal=writer)
    )
    assert ok.result == "OK"


def test_the_draft_envelope_namespace_is_accepted(app: App) -> None:
    from cim_schemas.namespaces import DRAFT_MESSAGE_NS

    def draft(day: int) -> bytes:
        body = meter_readings_bytes(["MTR-1"], START + timedelta(days=day), 4)
        return body.replace(MESSAGE_NS.encode(), DRAFT_MESSAGE_NS.encode())

    utf16 = draft(1).decode().replace('encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-16")
    for body in (draft(0), utf16):
        outcome = MemoryAdapter(app.pipeline).request(body)
        assert outcome.result == "OK", outcome.errors
    assert reading_count(app) == 10


def test_the_transport_id_keys_a_message_without_message_id(app: App) -> None:
    body = meter_readings_bytes(["MTR-1"], START, 2)
    body = body.replace(b"<MessageID>", b"<Comment>").replace(b"</MessageID>", b"</Comment>")
    first = app.pipeline.process(
        InboundMessage(source="p", endpoint="t", body=body, message_id="amqp-1")
    )
    again = app.pipeline.process(
        InboundMessage(source="p", endpoint="t", body=body, message_id="amqp-1")
    )
    assert first.ok
    assert again.duplicate
    assert first.message_id == "amqp-1"
