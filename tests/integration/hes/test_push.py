"""Push listener over real TCP: plain and ciphered DataNotifications from simulated meters."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import Engine

from adapters.sql.uow import SqlUnitOfWorkFactory
from cim_schemas.codes.reading_type import obis_to_reading_type
from hes.dlms import compat
from hes.dlms.wrapper import HEADER_SIZE, MANAGEMENT_LOGICAL_DEVICE, WrapperFrame
from hes.push import (
    KnownMeter,
    PushDecoder,
    PushedData,
    PushListener,
    SecurityEvent,
)
from hes.security import gcm
from hes.simulator.fleet import PUSH_CLIENT, Fleet
from hes.simulator.meter import SecurityPolicy, interval_end
from hub.push_store import MdmPushSink
from mdm.model import DeviceRef, DeviceState, EndDevice, EndDeviceEvent, Utility
from tests.conftest import free_port


class Directory:
    def __init__(self, fleet: Fleet, known: range) -> None:
        self.by_title = {
            fleet.meters[i].system_title: KnownMeter(
                f"MTR-{fleet.meters[i].serial}", fleet.meters[i].keys
            )
            for i in known
            if fleet.meters[i].policy is SecurityPolicy.HLS_GMAC
        }
        self.by_name = {
            fleet.meters[i].logical_device_name: KnownMeter(
                f"MTR-{fleet.meters[i].serial}",
                fleet.meters[i].keys if fleet.meters[i].policy is SecurityPolicy.HLS_GMAC else None,
            )
            for i in known
        }

    def by_system_title(self, system_title: bytes) -> KnownMeter | None:
        return self.by_title.get(system_title)

    def by_logical_device_name(self, name: str) -> KnownMeter | None:
        return self.by_name.get(name)


@pytest.fixture
def fleet() -> Fleet:
    f = Fleet.build(4, 1, seed=9)
    f.meters[2].policy = SecurityPolicy.LOW
    return f


class Collected:
    def __init__(self) -> None:
        self.pushes: list[PushedData] = []
        self.events: list[SecurityEvent] = []

    def wait(self, pushes: int, events: int = 0) -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if len(self.pushes) >= pushes and len(self.events) >= events:
                return
            time.sleep(0.01)
        raise AssertionError(f"got {len(self.pushes)} pushes, {len(self.events)} events")


@pytest.fixture
def listener(fleet: Fleet) -> Iterator[tuple[PushListener, Collected]]:
    got = Collected()
    decoder = PushDecoder(Directory(fleet, range(3)))  # meter 3 is unknown
    with PushListener(decoder, got.pushes.append, got.events.append, port=free_port()) as listener:
        yield listener, got


def test_ciphered_push_accepted(fleet: Fleet, listener: tuple[PushListener, Collected]) -> None:
    server, got = listener
    fleet.send_push(fleet.push_frame(0), server.host, server.port)
    got.wait(1)
    (push,) = got.pushes
    meter = fleet.meters[0]
    assert push.mrid == f"MTR-{meter.serial}"
    assert push.ciphered
    assert push.system_title == meter.system_title
    k = meter.current_interval()
    assert push.ts == interval_end(k)
    assert push.import_wh == Decimal(meter.energy_wh(k))


def test_replayed_push_rejected(fleet: Fleet, listener: tuple[PushListener, Collected]) -> None:
    server, got = listener
    frame = fleet.push_frame(1)
    fleet.send_push(frame, server.host, server.port)
    fleet.send_push(frame, server.host, server.port)
    got.wait(1, 1)
    assert len(got.pushes) == 1
    assert "replayed or rewound" in got.events[0].reason
    assert got.events[0].system_title == fleet.meters[1].system_title


def test_bit_flipped_push_rejected(fleet: Fleet, listener: tuple[PushListener, Collected]) -> None:
    server, got = listener
    frame = bytearray(fleet.push_frame(1))
    frame[HEADER_SIZE + 20] ^= 0x10
    fleet.send_push(bytes(frame), server.host, server.port)
    fleet.send_push(fleet.push_frame(1), server.host, server.port)  # the next one is fine
    got.wait(1, 1)
    assert "tag" in got.events[0].reason
    assert len(got.pushes) == 1


def test_unknown_system_title_rejected(
    fleet: Fleet, listener: tuple[PushListener, Collected]
) -> None:
    server, got = listener
    fleet.send_push(fleet.push_frame(3), server.host, server.port)
    got.wait(0, 1)
    assert "unknown system title" in got.events[0].reason
    assert got.pushes == []


def test_unauthenticated_pushes_refused_by_default(
    fleet: Fleet, listener: tuple[PushListener, Collected]
) -> None:
    server, got = listener
    fleet.send_push(fleet.push_frame(2, ciphered=False), server.host, server.port)  # LLS
    fleet.send_push(fleet.push_frame(3, ciphered=False), server.host, server.port)  # unknown
    got.wait(0, 2)
    reasons = sorted(e.reason for e in got.events)
    assert reasons == [
        f"unauthenticated push from MTR-{fleet.meters[2].serial} refused "
        "([hes.push] accept_unauthenticated is off)",
        f"unauthenticated push from unknown meter {fleet.meters[3].logical_device_name!r}: "
        "meters are registered from authenticated pushes only",
    ]
    assert got.pushes == []


def test_plain_push_of_a_known_meter_accepted_when_allowed(fleet: Fleet) -> None:
    got = Collected()
    decoder = PushDecoder(Directory(fleet, range(3)), accept_unauthenticated=True)
    with PushListener(decoder, got.pushes.append, got.events.append, port=free_port()) as server:
        fleet.send_push(fleet.push_frame(2, ciphered=False), server.host, server.port)
        fleet.send_push(fleet.push_frame(3, ciphered=False), server.host, server.port)
        got.wait(1, 1)
    (push,) = got.pushes
    assert push.mrid == f"MTR-{fleet.meters[2].serial}"
    assert not push.ciphered
    assert "unauthenticated push from unknown meter" in got.events[0].reason


def test_plain_push_for_a_secured_meter_rejected(
    fleet: Fleet, listener: tuple[PushListener, Collected]
) -> None:
    server, got = listener
    fleet.send_push(fleet.push_frame(0, ciphered=False), server.host, server.port)
    got.wait(0, 1)
    assert "plain push for secured meter" in got.events[0].reason


def test_pushes_stored_and_unknown_meter_registered_when_allowed(
    fleet: Fleet, store: Engine
) -> None:
    """register_unknown: a meter of the directory that authenticated its push but is not in
    the MDM is registered as DISCOVERED; a plain push of an unknown meter never is."""
    factory = SqlUnitOfWorkFactory(store)
    with factory() as uow:
        u = uow.utilities.add(Utility("ACME", "Acme Power"))
        assert u.id is not None
        uow.devices.add(u.id, EndDevice(f"MTR-{fleet.meters[0].serial}", "ACME"))
        uow.commit()
    events: list[SecurityEvent] = []
    decoder = PushDecoder(Directory(fleet, range(2)), accept_unauthenticated=True)
    sink = MdmPushSink(factory, "ACME", register_unknown=True)
    with PushListener(decoder, sink, events.append, port=free_port()) as server:
        fleet.send_push(fleet.push_frame(0), server.host, server.port)
        fleet.send_push(fleet.push_frame(1), server.host, server.port)  # not in the MDM
        fleet.send_push(fleet.push_frame(3, ciphered=False), server.host, server.port)
        deadline = time.monotonic() + 5
        discovered = None
        while time.monotonic() < deadline:
            with factory() as uow:
                if uow.readings.count() == 4 and events:
                    discovered = uow.devices.find(
                        u.id, DeviceRef(mrid=f"MTR-{fleet.meters[1].serial}")
                    )
                    break
            time.sleep(0.02)
    assert discovered is not None
    assert discovered.state is DeviceState.DISCOVERED
    (refused,) = events
    assert "unauthenticated push from unknown meter" in refused.reason
    with factory() as uow:
        assert (
            uow.devices.find(
                u.id, DeviceRef(mrid=f"DISCOVERED-{fleet.meters[3].logical_device_name}")
            )
            is None
        )
        device = uow.devices.find(u.id, DeviceRef(mrid=f"MTR-{fleet.meters[0].serial}"))
        assert device is not None
        assert device.id is not None
        plus_a = list(
            uow.readings.query(
                [device.id], [str(obis_to_reading_type("1.0.1.8.0.255"))], None, None
            )
        )
    meter = fleet.meters[0]
    k = meter.current_interval(datetime.now(UTC))
    assert [r.value for r in plus_a] in (
        [Decimal(meter.energy_wh(k)) / 1000],
        [Decimal(meter.energy_wh(k - 1)) / 1000],
    )


def stored_events(factory: SqlUnitOfWorkFactory) -> list[EndDeviceEvent]:
    with factory() as uow:
        utility = uow.utilities.get("ACME")
        assert utility is not None
        assert utility.id is not None
        return uow.events.query(utility.id, None, None, None)


def test_by_default_no_meter_is_registered_from_a_push(fleet: Fleet, store: Engine) -> None:
    """The issue's case: a plain push from an unknown meter claiming 2**64 - 1 Wh was stored
    as a discovered meter. Now refused (a security event), nothing registered; and an
    authenticated push of a manifest meter that is not in the MDM stores no readings."""
    factory = SqlUnitOfWorkFactory(store)
    with factory() as uow:
        u = uow.utilities.add(Utility("ACME", "Acme Power"))
        assert u.id is not None
        uow.devices.add(u.id, EndDevice(f"MTR-{fleet.meters[0].serial}", "ACME"))
        uow.commit()
    ts = datetime.now(UTC).replace(microsecond=0)
    body = (
        b"\x02\x04\x09\x06AMI666\x09\x0c"
        + compat.encode_datetime(ts)
        + b"\x15"
        + b"\xff" * 8  # +A: long64-unsigned 2**64 - 1 Wh
        + b"\x06\x00\x00\x00\x00"
    )
    hostile = bytes([0x0F]) + (1).to_bytes(4, "big") + b"\x00" + body
    sink = MdmPushSink(factory, "ACME")
    with PushListener(
        PushDecoder(Directory(fleet, range(2))), sink, sink.security, port=free_port()
    ) as server:
        send = lambda frame: fleet.send_push(frame, server.host, server.port)  # noqa: E731
        send(fleet.push_frame(1))  # in the manifest, not in the MDM
        send(WrapperFrame(MANAGEMENT_LOGICAL_DEVICE, PUSH_CLIENT, hostile).encode())
        send(fleet.push_frame(0))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with factory() as uow:
                count = uow.readings.count()
            if count == 2 and stored_events(factory):
                break
            time.sleep(0.02)
    (event,) = stored_events(factory)
    assert event.details["kind"] == "security_violation"
    assert event.device_mrid == "UNKNOWN-SYSTEM-TITLE-NONE"
    assert event.details["detail"] == (
        "unauthenticated push from unknown meter 'AMI666': meters are registered from "
        "authenticated pushes only"
    )
    with factory() as uow:
        assert uow.readings.count() == 2  # meter 0's +A and -A only
        for name in ("DISCOVERED-AMI666", f"MTR-{fleet.meters[1].serial}"):
            assert uow.devices.find(u.id, DeviceRef(mrid=name)) is None


def test_deeply_nested_pushes_refused_and_the_listener_goes_on(
    fleet: Fleet, listener: tuple[PushListener, Collected]
) -> None:
    """1,000 nested arrays in 2 KB (a RecursionError out of the handler before): refused
    as security events, plain and ciphered under the meter's real keys; the next push of
    the same connection's listener is stored."""
    server, got = listener
    meter = fleet.meters[0]
    deep = bytes([0x0F]) + (1).to_bytes(4, "big") + b"\x00" + b"\x01\x01" * 1000 + b"\x00"
    ciphered = gcm.general_glo_cipher(
        deep,
        keys=meter.keys,
        system_title=meter.system_title,
        invocation_counter=meter.next_counter(),
    )
    for apdu in (deep, ciphered):
        frame = WrapperFrame(MANAGEMENT_LOGICAL_DEVICE, PUSH_CLIENT, apdu).encode()
        fleet.send_push(frame, server.host, server.port)
    fleet.send_push(fleet.push_frame(0), server.host, server.port)
    got.wait(1, 2)
    assert all("nested deeper than 16 levels" in e.reason for e in got.events), got.events
    assert got.events[1].mrid == f"MTR-{meter.serial}"
    assert got.pushes[0].mrid == f"MTR-{meter.serial}"
