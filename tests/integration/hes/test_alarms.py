"""Meter events, alarms and security events stored as EndDeviceEvents and published through
the outbox: simulated meters over real TCP, SQLite store, the outbox rows as written."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine

from adapters.sql.engine import make_engine
from adapters.sql.migrate import upgrade
from adapters.sql.uow import SqlUnitOfWorkFactory
from cim_schemas.errors import StoreUnavailable
from hes.client.session import ClientIdentity, MeterCredentials, Security
from hes.controls import (
    FIRMWARE_UPDATE,
    LOAD_LIMIT_SET,
    ControlCommand,
    ControlJobs,
    FirmwareUpdate,
    JobState,
    LoadLimit,
)
from hes.dlms.wrapper import HEADER_SIZE
from hes.engine import (
    EnginePolicy,
    MeterOutcome,
    MeterTarget,
    ReadCommand,
    ReadingEngine,
    RunReport,
    tcp_sessions,
)
from hes.meter_events import unknown_sender_mrid
from hes.push import PushDecoder, PushListener
from hes.security.gcm import SecurityKeys
from hes.simulator.fleet import Fleet, SimulatorThread
from hes.simulator.meter import EventCode, interval_end, interval_index, make_firmware_image
from hub.headend import HeadEndOutbox
from hub.headend_store import MdmReadingSink
from hub.push_store import MdmPushSink
from hub.settings import Settings, load_settings
from mdm.model import DeviceRef, EndDevice, EndDeviceEvent, Utility
from mdm.ports import OutboxItem, UnitOfWork
from tests.conftest import free_port
from tests.integration.hes.test_push import Directory

CIS = "http://127.0.0.1:9/ws"
IMAGE = make_firmware_image("AMH-2.0.0", bytes(range(256)) * 2)
CODE = re.compile(rb'EndDeviceEventType ref="([0-9.]+)"')


def outbox_settings() -> Settings:
    """AMQP events and a SOAP subscriber for both nouns: everything is enqueued."""
    return load_settings(
        amqp={"enabled": True},
        soap={
            "subscribers": {
                "EndDeviceEvents": [f"{CIS}/SendEndDeviceEvents"],
                "MeterReadings": [f"{CIS}/SendMeterReadings"],
            }
        },
    )


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    f = Fleet.build(3, free_port(), seed=11)
    with SimulatorThread(f):
        yield f


@pytest.fixture
def factory(store: Engine, fleet: Fleet) -> SqlUnitOfWorkFactory:
    f = SqlUnitOfWorkFactory(store)
    with f() as uow:
        u = uow.utilities.add(Utility("ACME", "Acme Power"))
        assert u.id is not None
        for m in fleet.meters:
            uow.devices.add(u.id, EndDevice(mrid(fleet, fleet.meters.index(m)), "ACME"))
        uow.commit()
    return f


def mrid(fleet: Fleet, i: int) -> str:
    return f"MTR-{fleet.meters[i].serial}"


def targets(fleet: Fleet, wrong_keys: int | None = None) -> tuple[MeterTarget, ...]:
    out = []
    for i, m in enumerate(fleet.meters):
        keys = SecurityKeys(bytes(16), bytes(16)) if i == wrong_keys else m.keys
        ep = fleet.endpoint(i)
        out.append(
            MeterTarget(
                mrid(fleet, i),
                ep.host,
                ep.port,
                ep.logical_device,
                MeterCredentials(Security.HLS, system_title=m.system_title, keys=keys),
            )
        )
    return tuple(out)


def read(
    factory: Callable[[], UnitOfWork],
    fleet: Fleet,
    *,
    wrong_keys: int | None = None,
    only: int | None = None,
) -> RunReport:
    end = interval_end(interval_index(datetime.now(UTC)) - 1)
    engine = ReadingEngine(
        MdmReadingSink(factory, "ACME", HeadEndOutbox(outbox_settings())),
        policy=EnginePolicy(concurrency=3, timeout=1.0, attempts=2, backoff_base=0.01),
        identity=ClientIdentity(),
        sleep=lambda s: None,
    )
    chosen = targets(fleet, wrong_keys)
    if only is not None:
        chosen = chosen[only : only + 1]
    return engine.run(ReadCommand(chosen, end - timedelta(hours=6), end, read_events=True))


def stored_events(factory: SqlUnitOfWorkFactory) -> list[EndDeviceEvent]:
    with factory() as uow:
        utility = uow.utilities.get("ACME")
        assert utility is not None
        assert utility.id is not None
        return uow.events.query(utility.id, None, None, None)


def outbox(factory: SqlUnitOfWorkFactory, noun: str | None = None) -> list[OutboxItem]:
    """Every outbox item, read without claiming (the transaction is rolled back)."""
    with factory() as uow:
        items = [
            item
            for channel in ("amqp", "soap")
            for item in uow.outbox.claim_due(channel, datetime.now(UTC) + timedelta(days=1), 1000)
        ]
    return [i for i in items if noun is None or i.noun == noun]


def published_codes(items: list[OutboxItem], channel: str = "amqp") -> dict[str, int]:
    codes: dict[str, int] = {}
    for item in items:
        if item.channel == channel:
            for code in CODE.findall(item.body):
                codes[code.decode()] = codes.get(code.decode(), 0) + 1
    return codes


def by_device(events: list[EndDeviceEvent]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for e in events:
        out.setdefault(e.device_mrid, set()).add(e.event_type)
    return out


def test_meter_faults_become_stored_and_published_end_device_events(
    fleet: Fleet, factory: SqlUnitOfWorkFactory
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    # meter 0: a power outage and a cover opened (fault injection in its event log)
    fleet.meters[0].faults.outages = [(now - timedelta(hours=3), now - timedelta(hours=2))]
    fleet.meters[0].faults.tamper_at = now - timedelta(hours=1)
    # meter 1: a load limit job, then the load goes over it: the limiter opens the relay
    jobs = ControlJobs(
        tcp_sessions(ClientIdentity()), EnginePolicy(concurrency=2, timeout=1.0, attempts=2)
    )
    fleet.meters[1].faults.load_w = 9_000
    fleet.meters[1].limiter.min_over_s = 0
    limit = jobs.submit(
        ControlCommand(LOAD_LIMIT_SET, targets(fleet)[1:2], parameters=LoadLimit(5_000))
    )
    # meter 2: a firmware update (transfer, verify, activate)
    firmware = jobs.submit(
        ControlCommand(
            FIRMWARE_UPDATE, targets(fleet)[2:3], parameters=FirmwareUpdate(IMAGE, "AMH-2.0.0")
        )
    )
    jobs.run_due()
    assert firmware.state is JobState.SUCCEEDED, firmware.outcomes
    assert limit.outcomes, limit.outcomes

    report = read(factory, fleet)

    assert report.count(MeterOutcome.FAILED) == 0  # meter 0 is PARTIAL: no captures in the outage
    events = by_device(stored_events(factory))
    assert {"3.26.0.85", "26.26.0.216", "3.12.29.212"} <= events[mrid(fleet, 0)]
    assert {"3.15.261.24", "3.15.261.139"} <= events[mrid(fleet, 1)]  # changed, exceeded
    assert {"3.11.31.25", "3.11.31.4"} <= events[mrid(fleet, 2)]  # ready, activated
    assert not any("3.0.0.0" in codes for codes in events.values())  # all mapped
    stored = stored_events(factory)
    assert report.events_stored == len(stored)
    items = outbox(factory, "EndDeviceEvents")
    codes = published_codes(items)
    for expected in ("3.26.0.85", "26.26.0.216", "3.12.29.212", "3.15.261.139", "3.11.31.4"):
        assert codes.get(expected) == 1, (expected, codes)
    assert published_codes(items, "soap") == codes  # the SOAP subscriber gets the same
    soap = [i for i in items if i.channel == "soap"]
    assert {i.headers["service"] for i in soap} == {"SendEndDeviceEvents"}
    assert {i.destination for i in soap} == {f"{CIS}/SendEndDeviceEvents"}
    assert {i.destination for i in items if i.channel == "amqp"} == {"created.EndDeviceEvents"}
    # readings: one created MeterReadings message per batch (3 meters: one), both channels
    readings = outbox(factory, "MeterReadings")
    assert sorted((i.channel, i.destination) for i in readings) == [
        ("amqp", "created.MeterReadings"),
        ("soap", f"{CIS}/SendMeterReadings"),
    ]
    body = readings[0].body
    for i in range(3):
        assert mrid(fleet, i).encode() in body
    assert b"IntervalBlocks" in body
    assert b"Readings" in body

    # a second read of the same window: the same events, nothing stored or published twice
    again = read(factory, fleet)
    assert again.events_stored == 0
    assert len(stored_events(factory)) == len(stored)
    assert published_codes(outbox(factory, "EndDeviceEvents")) == codes


def test_event_counts_exact_on_re_read(fleet: Fleet, factory: SqlUnitOfWorkFactory) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    fleet.meters[0].faults.tamper_at = now - timedelta(minutes=30)
    first = read(factory, fleet)
    stored = stored_events(factory)
    assert first.events_stored == len(stored) >= 1
    messages = len(outbox(factory, "EndDeviceEvents"))
    assert messages == 2  # one event message, on the AMQP and the SOAP channel
    second = read(factory, fleet)
    assert second.events_stored == 0
    assert len(stored_events(factory)) == len(stored)
    assert len(outbox(factory, "EndDeviceEvents")) == messages


def test_wrong_keys_on_a_read_raise_a_security_event_and_the_run_goes_on(
    fleet: Fleet, factory: SqlUnitOfWorkFactory
) -> None:
    report = read(factory, fleet, wrong_keys=1)
    outcomes = {r.mrid: r for r in report.results}
    assert outcomes[mrid(fleet, 1)].outcome is MeterOutcome.FAILED
    assert outcomes[mrid(fleet, 0)].outcome is MeterOutcome.DONE
    assert outcomes[mrid(fleet, 2)].outcome is MeterOutcome.DONE
    security = [e for e in stored_events(factory) if e.event_type.startswith("3.12.")]
    assert [e.device_mrid for e in security] == [mrid(fleet, 1)]
    [event] = security
    assert event.details["source"] == "read"
    assert event.details["kind"] in ("association_refused", "authentication_failed")
    assert event.event_type in ("3.12.24.85", "3.12.0.85")
    assert event.severity == "alarm"
    assert published_codes(outbox(factory, "EndDeviceEvents")) == {event.event_type: 1}
    # the meters that answered are stored, and published as readings
    assert len(outbox(factory, "MeterReadings")) == 2


class CommitFails:
    """A real unit of work whose commit fails (the store goes away at commit)."""

    def __init__(self, factory: SqlUnitOfWorkFactory) -> None:
        self.factory = factory

    def __call__(self) -> UnitOfWork:
        uow = self.factory()

        def commit() -> None:
            raise StoreUnavailable("the store went away at commit")

        uow.commit = commit  # type: ignore[method-assign]
        return uow


def test_a_rolled_back_read_publishes_nothing(fleet: Fleet, factory: SqlUnitOfWorkFactory) -> None:
    fleet.meters[0].faults.tamper_at = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    with pytest.raises(StoreUnavailable):
        read(CommitFails(factory), fleet, wrong_keys=2)
    assert stored_events(factory) == []
    assert outbox(factory) == []
    with factory() as uow:
        assert uow.readings.count() == 0
    # the same read committed: stored and published
    read(factory, fleet, wrong_keys=2)
    codes = published_codes(outbox(factory, "EndDeviceEvents"))
    assert "3.12.29.212" in codes
    assert any(c.startswith("3.12.24.") or c == "3.12.0.85" for c in codes)


# --- pushes ---------------------------------------------------------------------------------


def wait_for(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError("timed out")


def test_pushed_alarms_and_refused_pushes(fleet: Fleet, factory: SqlUnitOfWorkFactory) -> None:
    sink = MdmPushSink(factory, "ACME", HeadEndOutbox(outbox_settings()))
    decoder = PushDecoder(Directory(fleet, range(2)))  # meter 2 is unknown to the head-end
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    with PushListener(decoder, sink, sink.security, port=free_port()) as server:
        send = lambda frame: fleet.send_push(frame, server.host, server.port)  # noqa: E731
        alarm = fleet.alarm_frame(0, EventCode.TERMINAL_COVER_OPENED, at=at)
        send(alarm)
        send(alarm)  # replayed: refused, a security event of meter 0
        flipped = bytearray(fleet.alarm_frame(1, EventCode.POWER_DOWN, at=at))
        flipped[HEADER_SIZE + 20] ^= 0x10
        send(bytes(flipped))  # bad tag: a security event of meter 1
        send(fleet.alarm_frame(2, EventCode.POWER_DOWN, at=at))  # unknown system title
        # unauthenticated, from a meter nobody knows: refused, no meter made of it
        send(fleet.alarm_frame(2, EventCode.STRONG_DC_FIELD, at=at, ciphered=False))
        unknown = unknown_sender_mrid(fleet.meters[2].system_title)
        wanted = {
            (mrid(fleet, 0), "3.12.29.212", ""),
            (mrid(fleet, 0), "3.12.43.257", "replay"),
            (mrid(fleet, 1), "3.12.0.85", "authentication_failed"),
            (unknown, "3.12.24.79", "unknown_system_title"),
            (unknown_sender_mrid(None), "3.12.0.85", "security_violation"),
        }

        def found_now() -> set[tuple[str, str, str]]:
            got = stored_events(factory)
            return {(e.device_mrid, e.event_type, e.details.get("kind", "")) for e in got}

        wait_for(lambda: found_now() == wanted)  # each of the five frames handled
    events = stored_events(factory)
    found = {(e.device_mrid, e.event_type, e.details.get("kind", "")) for e in events}
    assert len(events) == 5
    assert found == wanted
    tamper = next(e for e in events if e.event_type == "3.12.29.212")
    assert tamper.created_at == at
    assert tamper.details == {"meter_code": "40", "source": "push"}
    with factory() as uow:
        utility = uow.utilities.get("ACME")
        assert utility is not None
        assert utility.id is not None
        discovered = f"DISCOVERED-{fleet.meters[2].logical_device_name}"
        assert uow.devices.find(utility.id, DeviceRef(mrid=discovered)) is None
    codes = published_codes(outbox(factory, "EndDeviceEvents"))
    expected: dict[str, int] = {}
    for _, code, _ in found:
        expected[code] = expected.get(code, 0) + 1
    assert codes == expected

    # the pushed alarm is in meter 0's log: a read finds it and does not repeat it
    report = read(factory, fleet, only=0)
    assert report.count(MeterOutcome.DONE) == 1
    assert report.events_stored == 0
    assert published_codes(outbox(factory, "EndDeviceEvents")) == codes


def test_malformed_pushes_are_kept_as_security_events_and_the_listener_goes_on(
    fleet: Fleet, factory: SqlUnitOfWorkFactory
) -> None:
    from hes.dlms.wrapper import MANAGEMENT_LOGICAL_DEVICE, WrapperFrame
    from hes.simulator.fleet import PUSH_CLIENT

    sink = MdmPushSink(factory, "ACME", HeadEndOutbox(outbox_settings()))
    decoder = PushDecoder(Directory(fleet, range(3)))
    ldn = fleet.meters[0].logical_device_name.encode()
    garbage = b"\x0f\x00\x00\x00\x01\x00\x02\x02\x09\x01A\x03\x01"  # body: {"A", boolean}
    bad_clock = (
        b"\x0f\x00\x00\x00\x01\x00\x02\x03\x09"
        + bytes([len(ldn)])
        + ldn
        + b"\x09\x0c"
        + b"\xff" * 12  # a clock with every field "not specified": no instant
        + b"\x12\x00\x28"
    )
    frames = [
        WrapperFrame(MANAGEMENT_LOGICAL_DEVICE, PUSH_CLIENT, apdu).encode()
        for apdu in (garbage, bad_clock)
    ]
    with PushListener(decoder, sink, sink.security, port=free_port()) as server:
        for frame in frames:
            fleet.send_push(frame, server.host, server.port)
        at = datetime.now(UTC).replace(microsecond=0)
        fleet.send_push(
            fleet.alarm_frame(0, EventCode.TERMINAL_COVER_OPENED, at=at), server.host, server.port
        )
        wait_for(lambda: len(stored_events(factory)) >= 3)
    events = stored_events(factory)
    refused = [e for e in events if e.details.get("kind")]
    assert len(refused) == 2
    assert {e.device_mrid for e in refused} == {unknown_sender_mrid(None)}  # plain: no sender
    assert {e.details["apdu"] for e in refused} == {garbage.hex(), bad_clock.hex()}
    assert all(e.event_type == "3.12.0.85" for e in refused)
    reasons = {e.details["apdu"]: e.details["detail"] for e in refused}
    assert reasons[garbage.hex()] == "unexpected notification body"
    assert reasons[bad_clock.hex()].startswith("bad notification clock: not a valid COSEM"), reasons
    # the listener went on: the next push is stored
    assert any(e.event_type == "3.12.29.212" for e in events)


@pytest.mark.postgres
def test_events_stored_and_published_once_on_postgresql(postgres_url: str, fleet: Fleet) -> None:
    engine = make_engine(postgres_url)
    try:
        upgrade(engine)
        pg = SqlUnitOfWorkFactory(engine)
        with pg() as uow:
            u = uow.utilities.add(Utility("ACME", "Acme Power"))
            assert u.id is not None
            for i in range(len(fleet.meters)):
                uow.devices.add(u.id, EndDevice(mrid(fleet, i), "ACME"))
            uow.commit()
        now = datetime.now(UTC).replace(microsecond=0)
        fleet.meters[0].faults.outages = [(now - timedelta(hours=2), now - timedelta(hours=1))]
        fleet.meters[1].faults.tamper_at = now - timedelta(minutes=30)
        first = read(pg, fleet, wrong_keys=2)
        events = stored_events(pg)
        assert first.events_stored == len(events) == 4  # down, up, cover, security (meter 2)
        codes = published_codes(outbox(pg, "EndDeviceEvents"))
        assert codes == {
            "3.26.0.85": 1,
            "26.26.0.216": 1,
            "3.12.29.212": 1,
            **{e.event_type: 1 for e in events if e.details.get("kind")},
        }
        second = read(pg, fleet)
        assert second.events_stored == 0
        assert len(stored_events(pg)) == 4
        assert published_codes(outbox(pg, "EndDeviceEvents")) == codes
    finally:
        engine.dispose()


def test_a_rewound_invocation_counter_on_a_read_is_a_replay_security_event(
    fleet: Fleet, factory: SqlUnitOfWorkFactory
) -> None:
    fleet.meters[1].faults.rewind_counter = True  # the meter reuses old counters
    report = read(factory, fleet)
    failed = {r.mrid: r.error for r in report.results if r.outcome is MeterOutcome.FAILED}
    assert list(failed) == [mrid(fleet, 1)]
    [event] = [e for e in stored_events(factory) if e.details.get("kind")]
    assert (event.device_mrid, event.event_type, event.details["kind"]) == (
        mrid(fleet, 1),
        "3.12.43.257",
        "replay",
    )
    assert event.details["detail"] == failed[mrid(fleet, 1)]
    assert published_codes(outbox(factory, "EndDeviceEvents")) == {"3.12.43.257": 1}
