"""get MeterReadings naming EndDeviceGroups: the readings of the groups' current members,
on SQLite (the same checks run on PostgreSQL in tests/integration/hub)."""

from __future__ import annotations

import hashlib
import tracemalloc
from collections.abc import Iterator
from datetime import timedelta

import pytest
from lxml import etree

from adapters.memory import MemoryAdapter
from cim_schemas import schemas
from cim_schemas.envelope import Header, RequestInfo, render_request
from cim_schemas.namespaces import profile_ns
from cim_schemas.profiles._common import DateTimeInterval, IdentifiedObject
from cim_schemas.profiles.common import Name
from cim_schemas.profiles.get_meter_readings import GetMeterReadings, render_get_meter_readings
from hub.bootstrap import App
from hub.messages import InboundMessage, Outcome
from hub.nouns.get_meter_readings import DEFAULT_MAX_GROUP_METERS
from hub.samples import end_device_groups, meter_readings_bytes
from hub.settings import LimitSettings
from tests.unit.hub.conftest import START, add_meters, make_app

NS = {"mr": profile_ns("MeterReadings")}
DAY = timedelta(days=1)
BASE = "/GetMeterReadings/Request/GetMeterReadings"


def group_get(
    *groups: IdentifiedObject,
    devices: tuple[str, ...] = (),
    days: int = 1,
    message_id: str | None = None,
) -> bytes:
    """A GetMeterReadings wrapper naming ``groups`` (and meters ``devices``) for the
    first ``days`` days from START."""
    profile = GetMeterReadings(
        end_devices=tuple(IdentifiedObject(mrid=m) for m in devices),
        end_device_groups=groups,
        time_schedules=(DateTimeInterval(START, START + days * DAY),),
    )
    header = Header(verb="get", noun="MeterReadings", message_id=message_id)
    request = RequestInfo(get=render_get_meter_readings(profile))
    return render_request(header, request, style="wrapper")


def by_mrid(mrid: str) -> IdentifiedObject:
    return IdentifiedObject(mrid=mrid)


def by_name(name: str) -> IdentifiedObject:
    return IdentifiedObject(names=(Name(name),))


def reply_tree(body: bytes) -> etree._Element:
    tree = etree.fromstring(body)
    problems = schemas.validate(tree)
    assert problems == [], problems
    return tree


def answered(outcome: Outcome) -> dict[str, int]:
    """Meter mRID -> IntervalReadings answered for it (the reply checked against the XSD)."""
    reply = reply_tree(outcome.reply)
    return {
        str(mr.findtext("mr:Meter/mr:mRID", namespaces=NS)): len(
            mr.findall("mr:IntervalBlocks/mr:IntervalReadings", namespaces=NS)
        )
        for mr in reply.iterfind(".//mr:MeterReading", namespaces=NS)
    }


def send(app: App, body: bytes) -> Outcome:
    return MemoryAdapter(app.pipeline).request(body, source="cis")


def prepare(app: App) -> None:
    """MTR-1..3 with two days of readings, MTR-4 without any; groups: G-1 (wave 1) =
    MTR-1, MTR-3, MTR-4; EMPTY; OLD (closed, MTR-2)."""
    add_meters(app, "MTR-1", "MTR-2", "MTR-3", "MTR-4", install=False)
    loaded = send(app, meter_readings_bytes(["MTR-1", "MTR-2", "MTR-3"], START, 192))
    assert loaded.result == "OK", loaded.errors
    made = send(
        app,
        end_device_groups(
            "create",
            [
                {"mrid": "G-1", "name": "wave 1", "devices": ["MTR-1", "MTR-3", "MTR-4"]},
                {"mrid": "EMPTY", "name": "nobody"},
                {"mrid": "OLD", "name": "old round", "devices": ["MTR-2"]},
            ],
        ),
    )
    assert made.result == "OK", made.errors
    closed = send(app, end_device_groups("close", [{"mrid": "OLD"}]))
    assert closed.result == "OK", closed.errors


def group_get_checks(app: App) -> None:
    """Everything a group get answers, on the store ``app`` runs on."""
    prepare(app)
    # by mRID: the members' readings (MTR-4 has none: no MeterReading), on the read path
    outcome = send(app, group_get(by_mrid("G-1"), message_id="grp-1"))
    assert outcome.result == "OK", outcome.errors
    assert answered(outcome) == {"MTR-1": 96, "MTR-3": 96}
    assert outcome.counts["readings"] == 2 * 96
    with app.uow_factory() as uow:
        row = uow.messages.find("cis", "grp-1")
        assert row is not None
        steps = uow.messages.lifecycle(row.id)
    digest = hashlib.sha256(outcome.reply).hexdigest()
    assert steps[-1][2] == f"OK; reply of {len(outcome.reply)} bytes, sha256:{digest}"

    # by Names/name; a meter named as well as through the group is answered once
    outcome = send(app, group_get(by_name("wave 1"), devices=("MTR-1", "MTR-2")))
    assert outcome.result == "OK", outcome.errors
    assert answered(outcome) == {"MTR-1": 96, "MTR-2": 96, "MTR-3": 96}

    # the members as they are now: a meter removed is not read, one added is
    changed = send(app, end_device_groups("change", [{"mrid": "G-1", "devices": ["MTR-2"]}]))
    assert changed.result == "OK", changed.errors
    assert answered(send(app, group_get(by_mrid("G-1"), days=2))) == {"MTR-2": 192}

    # unknown, closed, empty: 2015 at each group's xpath; the rest answered (PARTIAL)
    outcome = send(
        app,
        group_get(by_mrid("G-1"), by_mrid("NO-SUCH"), by_mrid("OLD"), by_name("nobody")),
    )
    assert outcome.result == "PARTIAL"
    assert [(e.code, e.xpath, e.object_id) for e in outcome.errors] == [
        ("2015", f"{BASE}/EndDeviceGroup[2]", "NO-SUCH"),
        ("2015", f"{BASE}/EndDeviceGroup[3]", "OLD"),
        ("2015", f"{BASE}/EndDeviceGroup[4]", "nobody"),
    ]
    reasons = [e.reason for e in outcome.errors]
    assert reasons[0] == "end device group NO-SUCH does not exist"
    assert reasons[1] == "end device group OLD is closed"
    assert reasons[2] == "end device group nobody (EMPTY) has no member"
    assert answered(outcome) == {"MTR-2": 96}
    assert outcome.dead_letter_id is None  # an answer, not an input to fix

    # nothing usable: FAILED, a valid reply with the errors and no reading
    outcome = send(app, group_get(by_mrid("NO-SUCH"), by_name("old round")))
    assert outcome.result == "FAILED"
    assert [(e.code, e.object_id) for e in outcome.errors] == [
        ("2015", "NO-SUCH"),
        ("2015", "old round"),
    ]
    assert answered(outcome) == {}


@pytest.fixture
def app(sqlite_url: str) -> Iterator[App]:
    application = make_app(sqlite_url)
    yield application
    application.close()


def test_a_group_get_answers_the_readings_of_its_current_members(app: App) -> None:
    group_get_checks(app)


def test_a_group_without_identifier_and_usage_point_groups_are_refused(app: App) -> None:
    prepare(app)
    outcome = send(app, group_get(IdentifiedObject()))
    assert outcome.result == "FAILED"
    assert [(e.code, e.xpath) for e in outcome.errors] == [("2011", f"{BASE}/EndDeviceGroup[1]")]
    profile = GetMeterReadings(
        end_device_groups=(by_mrid("G-1"),), usage_point_groups=(by_mrid("TA-1"),)
    )
    body = render_request(
        Header(verb="get", noun="MeterReadings"),
        RequestInfo(get=render_get_meter_readings(profile)),
        style="wrapper",
    )
    outcome = send(app, body)
    assert [(e.code, e.xpath) for e in outcome.errors] == [("1011", f"{BASE}/UsagePointGroup[1]")]


def test_groups_over_the_member_limit_refuse_the_get(sqlite_url: str) -> None:
    """[limits] max_group_meters counts every group's members: the group that goes over
    is named (2013, its xpath), nothing is read, the refusal is kept as any refusal."""
    assert LimitSettings().max_group_meters == DEFAULT_MAX_GROUP_METERS == 10_000
    application = make_app(sqlite_url, max_group_meters=3)
    try:
        prepare(application)
        send(application, end_device_groups("create", [{"mrid": "G-2", "devices": ["MTR-2"]}]))
        at_limit = send(application, group_get(by_mrid("G-1")))
        assert at_limit.result == "OK", at_limit.errors
        outcome = send(application, group_get(by_mrid("G-1"), by_name("G-2")))
        assert outcome.result == "FAILED"
        [error] = outcome.errors
        assert (error.code, error.xpath, error.object_id) == (
            "2013",
            f"{BASE}/EndDeviceGroup[2]",
            "G-2",
        )
        assert error.reason == (
            "end device group G-2 has 1 meters, which takes this get to 4 meters through "
            "groups; one get reads at most 3 ([limits] max_group_meters): name fewer or "
            "smaller groups"
        )
        assert answered(outcome) == {}
        assert outcome.dead_letter_id is not None
    finally:
        application.close()


def _peak_of_group_get(app: App, group: str) -> tuple[int, int]:
    """Peak Python memory while the pipeline answers a one-day get of ``group`` (a
    streaming adapter: the reply stays in the spool's temporary file), and its size."""
    app.pipeline.reply_memory_bytes = 64 * 1024
    body = group_get(by_mrid(group))
    tracemalloc.start()
    outcome = app.pipeline.process(
        InboundMessage(source="cis", endpoint="t", body=body, stream_reply=True)
    )
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert outcome.result == "OK", outcome.errors
    assert outcome.reply_chunks is not None
    data = b"".join(outcome.reply_chunks)
    assert data.count(b"<IntervalReadings>") == outcome.counts["readings"]
    return peak, len(data)


def test_a_large_group_is_answered_with_bounded_memory(app: App) -> None:
    """A group of 400 meters answers 4x the readings of a group of 100 in about the
    same peak memory: rows stream from the store, the reply goes to a file."""
    meters = [f"MTR-{n:04d}" for n in range(400)]
    add_meters(app, *meters, install=False)
    for start in range(0, 400, 100):
        loaded = send(
            app, meter_readings_bytes(meters[start : start + 100], START, 96, registers=False)
        )
        assert loaded.result == "OK", loaded.errors
    made = send(
        app,
        end_device_groups(
            "create",
            [{"mrid": "SMALL", "devices": meters[:100]}, {"mrid": "LARGE", "devices": meters}],
        ),
    )
    assert made.result == "OK", made.errors
    _peak_of_group_get(app, "SMALL")  # warm up: schema, statements, caches
    small_peak, small_size = _peak_of_group_get(app, "SMALL")
    large_peak, large_size = _peak_of_group_get(app, "LARGE")
    assert large_size > 3.9 * small_size
    assert large_size > 4_000_000
    assert large_peak < 1.5 * small_peak + 256 * 1024, (small_peak, large_peak)


def test_the_full_path_answers_a_group_get_as_the_read_path_does(app: App) -> None:
    """The tree reply (the general path: async replies, batches) and the streamed one."""
    import io
    from datetime import UTC, datetime

    from cim_schemas.envelope import parse_message
    from hub.nouns.get_meter_readings import GetMeterReadingsRoute
    from hub.routing import MessageFrame, RouteContext
    from mdm.handlers import HandlerContext

    prepare(app)
    body = group_get(by_name("wave 1"), by_mrid("OLD"), devices=("MTR-2",), days=2)
    parsed = parse_message(etree.fromstring(body))
    assert parsed.header is not None
    frame = MessageFrame(parsed.header, parsed.style, parsed.root_name, request=parsed.request)
    out = io.BytesIO()
    with app.uow_factory() as uow:
        ctx = RouteContext(1, "DEFAULT", HandlerContext("t", datetime.now(UTC)), app.bus)
        streamed = GetMeterReadingsRoute().write_reply(out, frame, ctx, uow)
        tree = GetMeterReadingsRoute().handle(frame, ctx, uow)
    assert streamed.result == tree.result == "PARTIAL"
    assert (
        [(e.code, e.xpath) for e in streamed.errors]
        == [(e.code, e.xpath) for e in tree.errors]
        == [("2015", f"{BASE}/EndDeviceGroup[2]")]
    )
    assert tree.payload is not None
    written = reply_tree(out.getvalue())

    def meters(el: etree._Element) -> list[tuple[str, int]]:
        return [
            (
                str(mr.findtext("mr:Meter/mr:mRID", namespaces=NS)),
                len(mr.findall("mr:IntervalBlocks/mr:IntervalReadings", namespaces=NS)),
            )
            for mr in el.iterfind(".//mr:MeterReading", namespaces=NS)
        ]

    assert (
        meters(written) == meters(tree.payload) == [("MTR-1", 192), ("MTR-2", 192), ("MTR-3", 192)]
    )
