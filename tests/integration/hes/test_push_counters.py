"""Push replay protection that outlives the process: simulated meters push over real TCP
to ``amihub serve`` (a real restart between the pushes) and to two listeners on one
store; SQLite and PostgreSQL."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from adapters.dlms.push_service import PushService
from adapters.sql.engine import make_engine
from adapters.sql.migrate import upgrade
from adapters.sql.uow import SqlUnitOfWorkFactory
from hes.cli import fleet_manifest
from hes.simulator.fleet import Fleet
from hub.bootstrap import App, bootstrap
from hub.bootstrap import push_service as build
from hub.settings import load_settings
from mdm.model import EndDeviceEvent
from mdm.security_counters import CounterChannel
from tests.conftest import free_port
from tests.integration.hes.test_push_service import (
    CIS,
    SEED,
    SUBSCRIBERS,
    add_meters,
    events,
    mrid,
    outbox,
    published_readings,
    pushed,
    readings,
    wait_for,
)

REPLAY = "3.12.43.257"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/amihub.db"
    url: str = request.getfixturevalue("postgres_url")
    return url


def instants(factory: SqlUnitOfWorkFactory, meter: str) -> set[datetime]:
    return {datetime.fromisoformat(ts) for _, ts, _ in readings(factory, meter)}


def replays(factory: SqlUnitOfWorkFactory) -> list[EndDeviceEvent]:
    return [e for e in events(factory) if e.event_type == REPLAY]


# -- amihub serve, stopped and started again --------------------------------------------------


def serve(config: Path, port: int, cwd: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "hub.cli", "--config", str(config), "serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=cwd,
        text=True,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                output = proc.stdout.read() if proc.stdout else ""
                raise AssertionError(f"amihub serve did not start: {output}") from None
            time.sleep(0.2)


def stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    return output


def test_replayed_and_rewound_pushes_refused_after_a_restart(
    store_url: str, tmp_path: Path
) -> None:
    fleet = Fleet.build(2, free_port(), seed=SEED)
    manifest = tmp_path / "fleet.json"
    manifest.write_text(json.dumps(fleet_manifest(fleet)))
    engine = make_engine(store_url)
    upgrade(engine)
    factory = SqlUnitOfWorkFactory(engine)
    m0, m1 = mrid(fleet, 0), mrid(fleet, 1)
    add_meters(factory, [m0, m1])
    port = free_port()
    config = tmp_path / "amihub.toml"
    config.write_text(
        f'database_url = "{store_url}"\n'
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

    def send(frame: bytes) -> None:
        fleet.send_push(frame, "127.0.0.1", port)

    now = fleet.now()
    earlier, later = now - timedelta(minutes=15), now + timedelta(minutes=15)
    (at_earlier,) = {ts for _, _, ts, _ in pushed(fleet, 0, earlier)}
    (at_now,) = {ts for _, _, ts, _ in pushed(fleet, 0, now)}
    (at_later,) = {ts for _, _, ts, _ in pushed(fleet, 0, later)}
    old = fleet.push_frame(0, at=earlier)  # counter 1: captured, never delivered
    first = fleet.push_frame(0, at=now)  # counter 2
    meter1 = [fleet.push_frame(1, at=earlier), fleet.push_frame(1, at=now)]  # counters 1, 2

    proc = serve(config, port, tmp_path)
    try:
        for frame in (first, *meter1):
            send(frame)
        wait_for(lambda: len(readings(factory, m0)) == 2 and len(readings(factory, m1)) == 4)
    finally:
        before = stop(proc)
    assert "2 meters in the directory, 0 stored counters" in before, before
    with factory() as uow:
        stored = uow.invocation_counters.last(CounterChannel.PUSH)
    assert stored == {fleet.meters[0].system_title: 2, fleet.meters[1].system_title: 2}

    fleet.meters[1].faults.rewind_counter = True
    rewound = fleet.push_frame(1, at=later)  # the meter reuses counter 1
    fleet.meters[1].faults.rewind_counter = False
    fresh = fleet.push_frame(0, at=later)  # counter 3
    proc = serve(config, port, tmp_path)
    try:
        send(first)  # the same push again
        send(old)  # an older push, never stored
        send(rewound)
        send(fresh)  # the service goes on
        wait_for(lambda: at_later in instants(factory, m0) and len(replays(factory)) == 3)
    finally:
        after = stop(proc)

    assert "2 meters in the directory, 2 stored counters" in after, after
    assert "push listener stopped: 1 push(es) stored, 3 refused" in after, after
    for i in (0, 1):
        assert f"push refused from system title {fleet.meters[i].system_title.hex()}" in after
    refused = replays(factory)
    assert sorted(e.device_mrid for e in refused) == [m0, m0, m1]
    assert {e.details["kind"] for e in refused} == {"replay"}
    assert all(e.details["apdu"] for e in refused)
    assert sorted(e.details["detail"] for e in refused) == sorted(
        [
            f"replayed or rewound push: invocation counter 2 of "
            f"{fleet.meters[0].system_title.hex()} does not go forward (last 2)",
            f"replayed or rewound push: invocation counter 1 of "
            f"{fleet.meters[0].system_title.hex()} does not go forward (last 2)",
            f"replayed or rewound push: invocation counter 1 of "
            f"{fleet.meters[1].system_title.hex()} does not go forward (last 2)",
        ]
    )
    # nothing of the refused pushes stored: the old push's and the rewound push's instants
    assert instants(factory, m0) == {at_now, at_later}
    assert instants(factory, m1) == {at_earlier, at_now}
    published = [
        r for item in outbox(factory, "MeterReadings", "soap") for r in published_readings(item)
    ]
    assert sorted(published) == sorted(
        pushed(fleet, 0, now)
        | pushed(fleet, 1, earlier)
        | pushed(fleet, 1, now)
        | pushed(fleet, 0, later)
    )
    engine.dispose()


# -- two listeners on one store ----------------------------------------------------------------


@pytest.fixture
def listeners(
    store_url: str, tmp_path: Path
) -> Iterator[tuple[Fleet, list[App], list[PushService]]]:
    """Two push services built as ``amihub serve`` builds them, each with its own
    directory and counter tracker (two processes), on one store."""
    fleet = Fleet.build(1, free_port(), seed=SEED)
    manifest = tmp_path / "fleet.json"
    manifest.write_text(json.dumps(fleet_manifest(fleet)))
    settings = load_settings(
        database_url=store_url,
        default_utility="ACME",
        soap={"subscribers": SUBSCRIBERS},
        hes={
            "manifest": manifest,
            "simulated_seed": SEED,
            "push": {"enabled": True, "port": 0, "batch_wait": 0.05},
        },
    )
    apps = [bootstrap(settings, migrate=True) for _ in range(2)]
    add_meters(apps[0].uow_factory, [mrid(fleet, 0)])
    services = [build(app) for app in apps]
    for svc in services:
        svc.start()
    try:
        yield fleet, apps, services
    finally:
        for svc in services:
            svc.stop()
        for app in apps:
            app.close()


def handled(svc: PushService) -> int:
    return svc.writer.totals.pushes + svc.writer.totals.refused


def test_two_listeners_on_one_store_accept_a_push_once(
    listeners: tuple[Fleet, list[App], list[PushService]],
) -> None:
    fleet, apps, services = listeners
    factory = apps[0].uow_factory
    assert isinstance(factory, SqlUnitOfWorkFactory)
    now = fleet.now()
    frame = fleet.push_frame(0, at=now)  # counter 1, new to both trackers
    go = threading.Barrier(2)

    def deliver(svc: PushService) -> None:
        go.wait()
        fleet.send_push(frame, "127.0.0.1", svc.port)

    threads = [threading.Thread(target=deliver, args=(svc,)) for svc in services]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    wait_for(lambda: all(handled(svc) == 1 for svc in services))
    assert sorted(svc.writer.totals.pushes for svc in services) == [0, 1]
    (refused,) = replays(factory)
    st = fleet.meters[0].system_title.hex()
    assert refused.details["detail"] == (
        f"replayed or rewound push: invocation counter 1 of {st} does not go forward "
        "(last 1, in the store)"  # its listener's own tracker had let it through
    )
    assert refused.device_mrid == mrid(fleet, 0)
    assert len(readings(factory, mrid(fleet, 0))) == 2
    (message,) = outbox(factory, "MeterReadings", "soap")
    assert sorted(published_readings(message)) == sorted(pushed(fleet, 0, now))

    # the meter's next pushes, one to each listener: both go forward, both stored
    later = now + timedelta(minutes=15)
    fleet.send_push(fleet.push_frame(0, at=later), "127.0.0.1", services[1].port)
    wait_for(lambda: handled(services[1]) == 2)
    fleet.send_push(
        fleet.push_frame(0, at=later + timedelta(minutes=15)), "127.0.0.1", services[0].port
    )
    wait_for(lambda: handled(services[0]) == 2)
    assert sum(svc.writer.totals.pushes for svc in services) == 3
    assert len(replays(factory)) == 1
    assert len(readings(factory, mrid(fleet, 0))) == 6
    with factory() as uow:
        assert uow.invocation_counters.last(CounterChannel.PUSH) == {
            fleet.meters[0].system_title: 3
        }
