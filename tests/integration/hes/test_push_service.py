"""The push listener as ``amihub serve`` runs it ([hes.push]): simulated meters push over
real TCP to the service; data, alarms and refused pushes stored and published."""

from __future__ import annotations

import json
import logging
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from lxml import etree

from adapters.dlms import MeterDirectory
from adapters.dlms.push_service import PushService
from adapters.sql.engine import make_engine
from adapters.sql.migrate import upgrade
from adapters.sql.uow import SqlUnitOfWorkFactory
from cim_schemas.codes.reading_type import obis_to_reading_type
from cim_schemas.errors import ConfigurationError
from hes.cli import fleet_manifest
from hes.dlms.wrapper import MANAGEMENT_LOGICAL_DEVICE, WrapperFrame
from hes.push import PushedData, notification
from hes.security import gcm
from hes.simulator.fleet import PUSH_CLIENT, Fleet
from hes.simulator.meter import EventCode, SecurityPolicy, interval_end
from hub.bootstrap import App, bootstrap
from hub.bootstrap import push_service as build
from hub.headend import HeadEndOutbox
from hub.push_store import MdmPushSink
from hub.serve import enabled_services
from hub.settings import load_settings
from mdm.model import DeviceRef, DeviceState, EndDevice, EndDeviceEvent, Utility
from mdm.ports import OutboxItem, UnitOfWork, UnitOfWorkFactory
from tests.conftest import free_port

SEED = 5
CIS = "http://127.0.0.1:9/ws"
IMPORT = str(obis_to_reading_type("1.0.1.8.0.255"))
EXPORT = str(obis_to_reading_type("1.0.2.8.0.255"))
SUBSCRIBERS = {
    "MeterReadings": [f"{CIS}/SendMeterReadings"],
    "EndDeviceEvents": [f"{CIS}/SendEndDeviceEvents"],
}

#: one reading of a published MeterReadings message: (meter, ReadingType, instant, value)
Published = tuple[str, str, datetime, Decimal]


def mrid(fleet: Fleet, i: int) -> str:
    return f"MTR-{fleet.meters[i].serial}"


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def utility_id(uow: UnitOfWork, code: str = "ACME") -> int:
    utility = uow.utilities.get(code)
    assert utility is not None
    assert utility.id is not None
    return utility.id


def readings(factory: SqlUnitOfWorkFactory, meter: str) -> set[tuple[str, str, str]]:
    """(ReadingType, instant, value) stored for a meter."""
    with factory() as uow:
        texts = uow.readings.meter_texts(utility_id(uow), [meter], None, None, None)
        return {(r.reading_type, r.ts, r.value) for r in texts.rows}


def events(factory: SqlUnitOfWorkFactory) -> list[EndDeviceEvent]:
    with factory() as uow:
        return uow.events.query(utility_id(uow), None, None, None)


def outbox(factory: SqlUnitOfWorkFactory, noun: str, channel: str) -> list[OutboxItem]:
    """The outbox items of a noun, read without claiming (rolled back)."""
    with factory() as uow:
        items = uow.outbox.claim_due(channel, datetime.now(UTC) + timedelta(days=1), 1000)
    return [i for i in items if i.noun == noun]


def published_readings(item: OutboxItem) -> list[Published]:
    root = etree.fromstring(item.body)
    out: list[Published] = []
    for meter_reading in root.iter("{*}MeterReading"):
        meter = meter_reading.findtext("{*}Meter/{*}mRID")
        assert meter is not None
        for r in meter_reading.iter("{*}Readings"):
            rt = r.find("{*}ReadingType")
            ts, value = r.findtext("{*}timeStamp"), r.findtext("{*}value")
            assert rt is not None
            assert ts is not None
            assert value is not None
            out.append((meter, rt.get("ref", ""), datetime.fromisoformat(ts), Decimal(value)))
    return out


def pushed(fleet: Fleet, i: int, at: datetime | None = None) -> set[Published]:
    """What a data push of meter ``i`` carries (at the last interval end before ``at``)."""
    meter = fleet.meters[i]
    k = meter.current_interval(at or fleet.now())
    ts = interval_end(k)
    return {
        (mrid(fleet, i), IMPORT, ts, Decimal(meter.energy_wh(k)) / 1000),
        (mrid(fleet, i), EXPORT, ts, Decimal(meter.export_wh(k)) / 1000),
    }


def add_meters(factory: UnitOfWorkFactory, mrids: list[str]) -> None:
    with factory() as uow:
        u = uow.utilities.get("ACME") or uow.utilities.add(Utility("ACME", "Acme Power"))
        assert u.id is not None
        for m in mrids:
            uow.devices.add(u.id, EndDevice(m, "ACME"))
        uow.commit()


# -- amihub serve ------------------------------------------------------------------------------


def test_amihub_serve_runs_the_push_listener(tmp_path: Path) -> None:
    fleet = Fleet.build(4, free_port(), seed=SEED)  # meter 3 is in no manifest
    manifest = tmp_path / "fleet.json"
    manifest.write_text(json.dumps(fleet_manifest(fleet)[:3]))
    url = f"sqlite:///{tmp_path}/amihub.db"
    engine = make_engine(url)
    upgrade(engine)
    factory = SqlUnitOfWorkFactory(engine)
    add_meters(factory, [mrid(fleet, i) for i in range(3)])
    port = free_port()
    config = tmp_path / "amihub.toml"
    config.write_text(
        f'database_url = "{url}"\n'
        'default_utility = "ACME"\n'
        "[soap.subscribers]\n"
        f'MeterReadings = ["{CIS}/SendMeterReadings"]\n'
        f'EndDeviceEvents = ["{CIS}/SendEndDeviceEvents"]\n'
        "[hes]\n"
        f'manifest = "{manifest}"\n'
        f"simulated_seed = {SEED}\n"
        "[hes.push]\n"
        "enabled = true\n"
        f"port = {port}\n"
        "batch_wait = 0.05\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "hub.cli", "--config", str(config), "serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline, "amihub serve did not start"
                time.sleep(0.2)
        send = lambda frame: fleet.send_push(frame, "127.0.0.1", port)  # noqa: E731
        now = fleet.now()
        first = fleet.push_frame(0, at=now)
        expected = pushed(fleet, 0, now)
        send(first)
        wait_for(lambda: len(readings(factory, mrid(fleet, 0))) == 2)
        send(first)  # replayed: refused, a security event, nothing stored again
        at = datetime.now(UTC).replace(microsecond=0)
        send(fleet.alarm_frame(1, EventCode.TERMINAL_COVER_OPENED, at=at))
        send(fleet.push_frame(3, ciphered=False))  # unauthenticated, unknown: refused
        wait_for(lambda: len(events(factory)) >= 3)
        send(fleet.push_frame(2, at=now))  # the service goes on after a refused push
        expected |= pushed(fleet, 2, now)
        wait_for(lambda: len(readings(factory, mrid(fleet, 2))) == 2)
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output

    found = {(e.device_mrid, e.event_type, e.details.get("kind", "")) for e in events(factory)}
    assert found == {
        (mrid(fleet, 0), "3.12.43.257", "replay"),
        (mrid(fleet, 1), "3.12.29.212", ""),
        ("UNKNOWN-SYSTEM-TITLE-NONE", "3.12.0.85", "security_violation"),
    }
    assert readings(factory, mrid(fleet, 1)) == set()  # an alarm push has no registers
    published = [
        r for item in outbox(factory, "MeterReadings", "soap") for r in published_readings(item)
    ]
    assert not [r for r in published if r[0].startswith("DISCOVERED-")]
    assert sorted(published) == sorted(expected)  # each once
    event_messages = outbox(factory, "EndDeviceEvents", "soap")
    assert b"3.12.43.257" in b"".join(i.body for i in event_messages)

    st = fleet.meters[0].system_title.hex()
    assert f"push listener on 127.0.0.1:{port}" in output, output
    assert f"push refused from system title {st}" in output, output
    assert "replayed or rewound" in output
    assert "push listener stopped: 3 push(es) stored, 2 refused" in output, output
    for m in fleet.meters:  # no key material in the log
        assert m.keys.encryption_key.hex() not in output
        assert m.keys.authentication_key.hex() not in output
    engine.dispose()


# -- in process: the service built as amihub serve builds it ----------------------------------


@pytest.fixture
def fleet() -> Fleet:
    f = Fleet.build(4, free_port(), seed=SEED)
    f.meters[3].policy = SecurityPolicy.LOW  # pushes plain, known by its logical device name
    return f


def make_app(sqlite_url: str, fleet: Fleet, tmp_path: Path, **push: object) -> App:
    manifest = tmp_path / "fleet.json"
    manifest.write_text(json.dumps(fleet_manifest(fleet)))
    settings = load_settings(
        database_url=sqlite_url,
        default_utility="ACME",
        soap={"subscribers": SUBSCRIBERS},  # the outbox gets the events (nothing delivers)
        hes={
            "manifest": manifest,
            "simulated_seed": SEED,
            "push": {"enabled": True, "port": 0, **push},
        },
    )
    app = bootstrap(settings, migrate=True)
    add_meters(app.uow_factory, [mrid(fleet, i) for i in range(len(fleet.meters))])
    return app


@pytest.fixture
def service(sqlite_url: str, fleet: Fleet, tmp_path: Path) -> Iterator[tuple[App, PushService]]:
    app = make_app(
        sqlite_url,
        fleet,
        tmp_path,
        batch_wait=1.0,
        max_frame_bytes=512,
        accept_unauthenticated=True,
    )
    (service,) = enabled_services(app)
    assert isinstance(service, PushService)
    service.start()
    try:
        yield app, service
    finally:
        service.stop()
        app.close()


def test_one_readings_message_per_batch_and_only_what_is_new(
    fleet: Fleet, service: tuple[App, PushService]
) -> None:
    app, svc = service
    factory = app.uow_factory
    assert isinstance(factory, SqlUnitOfWorkFactory)
    send = lambda frame: fleet.send_push(frame, "127.0.0.1", svc.port)  # noqa: E731
    now = fleet.now()
    plain = fleet.push_frame(3, ciphered=False, at=now)
    expected = pushed(fleet, 0, now) | pushed(fleet, 1, now) | pushed(fleet, 3, now)
    for frame in (fleet.push_frame(0, at=now), fleet.push_frame(1, at=now), plain):
        send(frame)  # within batch_wait: one batch, one transaction
    wait_for(lambda: svc.writer.totals.pushes == 3)
    (message,) = outbox(factory, "MeterReadings", "soap")
    assert sorted(published_readings(message)) == sorted(expected)
    assert message.destination == f"{CIS}/SendMeterReadings"

    send(plain)  # the same values again (a plain push has no counter): stored as they are
    wait_for(lambda: svc.writer.totals.pushes == 4)
    assert len(outbox(factory, "MeterReadings", "soap")) == 1  # nothing new: nothing published
    assert svc.writer.totals.readings_stored == 6

    later = now + timedelta(minutes=15)  # the next interval: new readings
    send(fleet.push_frame(0, at=later))
    wait_for(lambda: svc.writer.totals.pushes == 5)
    messages = outbox(factory, "MeterReadings", "soap")
    assert len(messages) == 2
    assert set(published_readings(messages[1])) == pushed(fleet, 0, later)


def test_oversized_and_bad_frames_refused_and_the_service_goes_on(
    fleet: Fleet, service: tuple[App, PushService], caplog: pytest.LogCaptureFixture
) -> None:
    app, svc = service
    factory = app.uow_factory
    assert isinstance(factory, SqlUnitOfWorkFactory)
    caplog.set_level(logging.WARNING, logger="hes.push")
    ldn = fleet.meters[3].logical_device_name.encode()
    big = notification(ldn, datetime.now(UTC), 1, 2) + bytes(600)  # over max_frame_bytes 512
    with socket.create_connection(("127.0.0.1", svc.port), timeout=5) as sock:
        sock.sendall(WrapperFrame(MANAGEMENT_LOGICAL_DEVICE, PUSH_CLIENT, big).encode())
        sock.settimeout(5)
        assert sock.recv(1) == b""  # the listener closed the connection
    with socket.create_connection(("127.0.0.1", svc.port), timeout=5) as sock:
        sock.sendall(b"\x00\x02\x00\x01\x00\x66\x00\x10")  # WRAPPER version 2
        assert sock.recv(1) == b""
    fleet.send_push(fleet.push_frame(0), "127.0.0.1", svc.port)
    wait_for(lambda: svc.writer.totals.pushes == 1 and svc.writer.totals.refused == 2)
    refused = [e for e in events(factory) if e.details.get("kind")]
    reasons = sorted(e.details["detail"] for e in refused)
    assert reasons[0].startswith("bad WRAPPER header from 127.0.0.1:"), reasons
    assert "WRAPPER version 2 is not 1" in reasons[0]
    assert reasons[1].startswith(f"frame of {len(big)} bytes from 127.0.0.1:"), reasons
    assert reasons[1].endswith("is over the limit of 512 bytes (max_frame_bytes)")
    assert all(e.event_type == "3.12.0.85" for e in refused)
    lines = [r.getMessage() for r in caplog.records if r.name == "hes.push"]
    assert len(lines) == 2, lines
    assert all(line.startswith("push refused from system title - (127.0.0.1:") for line in lines)
    assert len(readings(factory, mrid(fleet, 0))) == 2


def test_idle_connections_are_closed(sqlite_url: str, fleet: Fleet, tmp_path: Path) -> None:
    app = make_app(sqlite_url, fleet, tmp_path, idle_timeout=0.3)
    (svc,) = enabled_services(app)
    assert isinstance(svc, PushService)
    svc.start()
    try:
        with socket.create_connection(("127.0.0.1", svc.port), timeout=5) as sock:
            started = time.monotonic()
            sock.settimeout(5)
            assert sock.recv(1) == b""
            assert 0.2 < time.monotonic() - started < 3
    finally:
        svc.stop()
        app.close()


# -- settings and start-up errors ---------------------------------------------------------------


def test_push_policy_defaults_and_registering_unknown_meters(fleet: Fleet, tmp_path: Path) -> None:
    """[hes.push] as `amihub serve` builds it (issue 12, point 18). By default an
    unauthenticated push (meter 3: an LLS meter of the manifest) and a push from an
    unknown system title are refused and kept as security events, and a manifest meter
    that is not in the MDM stores no readings. With register_unknown that meter is
    registered as DISCOVERED from its authenticated push; with accept_unauthenticated
    the LLS meter's plain push is stored; a plain push never registers a meter."""
    stranger = Fleet.build(6, free_port(), seed=SEED).meters[5]  # in no manifest

    def started(db: str, **push: object) -> tuple[App, PushService, SqlUnitOfWorkFactory]:
        url = f"sqlite:///{tmp_path}/{db}.db"
        app = make_app(url, fleet, tmp_path, batch_wait=0.05, **push)
        factory = app.uow_factory
        assert isinstance(factory, SqlUnitOfWorkFactory)
        with factory() as uow:  # meter 2: in the manifest, not in the MDM
            device = uow.devices.find(utility_id(uow), DeviceRef(mrid=mrid(fleet, 2)))
            assert device is not None
            assert device.id is not None
            uow.devices.delete(utility_id(uow), device.id)
            uow.commit()
        (svc,) = enabled_services(app)
        assert isinstance(svc, PushService)
        svc.start()
        return app, svc, factory

    def kinds(factory: SqlUnitOfWorkFactory) -> set[tuple[str, str, str]]:
        return {
            (e.device_mrid, e.details["kind"], e.details["detail"])
            for e in events(factory)
            if e.details.get("kind")
        }

    def stored(i: int) -> set[tuple[str, str, str]]:  # what pushed() gives, as readings() does
        return {(rt, ts.isoformat(), str(kwh)) for _, rt, ts, kwh in pushed(fleet, i, now)}

    def device(factory: SqlUnitOfWorkFactory, name: str) -> EndDevice | None:
        with factory() as uow:
            return uow.devices.find(utility_id(uow), DeviceRef(mrid=name))

    now = fleet.now()
    stranger_push = notification(stranger.logical_device_name.encode(), now, 1, 2)
    ciphered_stranger = gcm.general_glo_cipher(
        stranger_push, keys=stranger.keys, system_title=stranger.system_title, invocation_counter=1
    )
    app, svc, factory = started("defaults")
    try:
        send = lambda frame: fleet.send_push(frame, "127.0.0.1", svc.port)  # noqa: E731
        send(fleet.push_frame(3, ciphered=False, at=now))
        send(WrapperFrame(MANAGEMENT_LOGICAL_DEVICE, PUSH_CLIENT, ciphered_stranger).encode())
        send(fleet.push_frame(2, at=now))
        send(fleet.push_frame(0, at=now))
        wait_for(lambda: svc.writer.totals.pushes == 2 and svc.writer.totals.refused == 2)
    finally:
        svc.stop()
        app.close()
    assert readings(factory, mrid(fleet, 0)) == stored(0)
    assert readings(factory, mrid(fleet, 3)) == set()
    assert readings(factory, mrid(fleet, 2)) == set()
    assert device(factory, mrid(fleet, 2)) is None
    assert kinds(factory) == {
        (
            mrid(fleet, 3),
            "security_violation",
            f"unauthenticated push from {mrid(fleet, 3)} refused "
            "([hes.push] accept_unauthenticated is off)",
        ),
        (
            f"UNKNOWN-SYSTEM-TITLE-{stranger.system_title.hex().upper()}",
            "unknown_system_title",
            f"push from unknown system title {stranger.system_title.hex()}",
        ),
    }

    app, svc, factory = started("allowed", register_unknown=True, accept_unauthenticated=True)
    try:
        send = lambda frame: fleet.send_push(frame, "127.0.0.1", svc.port)  # noqa: E731
        send(fleet.push_frame(3, ciphered=False, at=now))
        send(fleet.push_frame(2, at=now))
        send(WrapperFrame(MANAGEMENT_LOGICAL_DEVICE, PUSH_CLIENT, stranger_push).encode())
        wait_for(lambda: svc.writer.totals.pushes == 2 and svc.writer.totals.refused == 1)
    finally:
        svc.stop()
        app.close()
    registered = device(factory, mrid(fleet, 2))
    assert registered is not None
    assert registered.state is DeviceState.DISCOVERED
    assert readings(factory, mrid(fleet, 2)) == stored(2)
    assert readings(factory, mrid(fleet, 3)) == stored(3)
    ((who, kind, detail),) = kinds(factory)
    assert (who, kind) == ("UNKNOWN-SYSTEM-TITLE-NONE", "security_violation")
    assert detail.startswith("unauthenticated push from unknown meter")
    assert device(factory, f"DISCOVERED-{stranger.logical_device_name}") is None


def test_bad_push_settings_are_named() -> None:
    with pytest.raises(ConfigurationError) as bad_port:
        load_settings(hes={"push": {"enabled": True, "port": 70000}})
    assert "hes.push.port: Input should be less than or equal to 65535" in str(bad_port.value)
    with pytest.raises(ConfigurationError) as bad_size:
        load_settings(hes={"push": {"max_frame_bytes": 8}})
    assert "hes.push.max_frame_bytes" in str(bad_size.value)
    with pytest.raises(ConfigurationError) as unknown:
        load_settings(hes={"push": {"prot": 4059}})
    assert "hes.push.prot: Extra inputs are not permitted" in str(unknown.value)


def test_push_without_manifest_or_with_a_taken_port(
    sqlite_url: str, fleet: Fleet, tmp_path: Path
) -> None:
    app = bootstrap(
        load_settings(database_url=sqlite_url, hes={"push": {"enabled": True}}), migrate=True
    )
    try:
        with pytest.raises(
            ConfigurationError, match=r"\[hes.push\] is enabled but no \[hes\] manifest"
        ):
            enabled_services(app)
    finally:
        app.close()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        app = make_app(sqlite_url, fleet, tmp_path, port=port)
        try:
            svc = build(app)
            with pytest.raises(ConfigurationError) as error:
                svc.start()
            assert f"[hes.push] cannot listen on 127.0.0.1:{port}: " in str(error.value)
            assert "in use" in str(error.value)
        finally:
            app.close()


# -- the sink on PostgreSQL: one transaction a batch, only what is new published ---------------


@pytest.mark.postgres
def test_batch_write_on_postgresql(postgres_url: str, fleet: Fleet) -> None:
    engine = make_engine(postgres_url)
    try:
        upgrade(engine)
        factory = SqlUnitOfWorkFactory(engine)
        add_meters(factory, [mrid(fleet, i) for i in range(3)])
        settings = load_settings(soap={"subscribers": SUBSCRIBERS})
        sink = MdmPushSink(factory, "ACME", HeadEndOutbox(settings))
        ts = datetime(2026, 3, 1, 12, 15, tzinfo=UTC)

        def push(i: int, wh: int, at: datetime = ts) -> PushedData:
            name = fleet.meters[i].logical_device_name
            return PushedData(mrid(fleet, i), name, at, Decimal(wh), Decimal(7), True)

        first = sink.write([push(0, 1000), push(1, 2000)])
        assert (first.pushes, first.readings_stored, first.readings_published) == (2, 4, 4)
        # meter 0 the same again, meter 1 a changed +A, meter 2 new, an unknown meter
        second = sink.write(
            [
                push(0, 1000),
                push(1, 2500),
                push(2, 3000),
                PushedData("MTR-NOT-IN-MDM", "X", ts, Decimal(1), Decimal(1), True),
            ]
        )
        assert second.readings_stored == 3  # +A of meter 1 superseded, meter 2 stored
        assert second.unknown_meters == ("MTR-NOT-IN-MDM",)
        messages = outbox(factory, "MeterReadings", "soap")
        assert len(messages) == 2
        assert sorted(published_readings(messages[1])) == sorted(
            [
                (mrid(fleet, 1), IMPORT, ts, Decimal("2.5")),
                (mrid(fleet, 2), IMPORT, ts, Decimal("3")),
                (mrid(fleet, 2), EXPORT, ts, Decimal("0.007")),
            ]
        )
        third = sink.write([push(0, 1000), push(1, 2500)])  # all stored as they are
        assert (third.readings_stored, third.readings_published) == (0, 0)
        assert len(outbox(factory, "MeterReadings", "soap")) == 2
    finally:
        engine.dispose()


def test_directory_of_the_service_is_the_head_ends(
    sqlite_url: str, fleet: Fleet, tmp_path: Path
) -> None:
    app = make_app(sqlite_url, fleet, tmp_path)
    try:
        svc = build(app)
        assert app.headend is not None
        assert svc.listener.decoder.directory is getattr(app.headend, "directory", None)
        assert isinstance(svc.listener.decoder.directory, MeterDirectory)
    finally:
        app.close()
