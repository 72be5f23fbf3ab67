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
from hes.dlms.wrapper import HEADER_SIZE
from hes.push import (
    KnownMeter,
    MdmPushSink,
    PushDecoder,
    PushedData,
    PushListener,
    SecurityEvent,
)
from hes.simulator.fleet import Fleet
from hes.simulator.meter import SecurityPolicy, interval_end
from mdm.model import DeviceRef, DeviceState, EndDevice, Utility
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


def test_plain_push_known_and_discovered(
    fleet: Fleet, listener: tuple[PushListener, Collected]
) -> None:
    server, got = listener
    fleet.send_push(fleet.push_frame(2, ciphered=False), server.host, server.port)
    fleet.send_push(fleet.push_frame(3, ciphered=False), server.host, server.port)
    got.wait(2)
    by_name = {p.logical_device_name: p for p in got.pushes}
    assert by_name[fleet.meters[2].logical_device_name].mrid == f"MTR-{fleet.meters[2].serial}"
    assert by_name[fleet.meters[3].logical_device_name].mrid is None  # discovered
    assert not any(p.ciphered for p in got.pushes)


def test_plain_push_for_a_secured_meter_rejected(
    fleet: Fleet, listener: tuple[PushListener, Collected]
) -> None:
    server, got = listener
    fleet.send_push(fleet.push_frame(0, ciphered=False), server.host, server.port)
    got.wait(0, 1)
    assert "plain push for secured meter" in got.events[0].reason


def test_pushes_stored_and_unknown_meter_discovered(fleet: Fleet, store: Engine) -> None:
    factory = SqlUnitOfWorkFactory(store)
    with factory() as uow:
        u = uow.utilities.add(Utility("ACME", "Acme Power"))
        assert u.id is not None
        uow.devices.add(u.id, EndDevice(f"MTR-{fleet.meters[0].serial}", "ACME"))
        uow.commit()
    events: list[SecurityEvent] = []
    decoder = PushDecoder(Directory(fleet, range(1)))
    with PushListener(
        decoder, MdmPushSink(factory, "ACME"), events.append, port=free_port()
    ) as server:
        fleet.send_push(fleet.push_frame(0), server.host, server.port)
        fleet.send_push(fleet.push_frame(3, ciphered=False), server.host, server.port)
        deadline = time.monotonic() + 5
        discovered = None
        while time.monotonic() < deadline:
            with factory() as uow:
                if uow.readings.count() == 4:
                    discovered = uow.devices.find(
                        u.id, DeviceRef(mrid=f"DISCOVERED-{fleet.meters[3].logical_device_name}")
                    )
                    break
            time.sleep(0.02)
    assert discovered is not None
    assert discovered.state is DeviceState.DISCOVERED
    with factory() as uow:
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
    assert events == []
