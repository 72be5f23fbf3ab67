"""Meter alarms read by a scheduled fleet read (in-process) and by an ``amihub engine`` read
job are stored once and put in the outbox as created EndDeviceEvents (with the readings as
created MeterReadings). Simulated meters over TCP, SQLite; the engine job is run through
EngineWorker.execute, as a delivery would run it (no broker needed for that part)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adapters.dlms.engine_worker import EngineWorker, fleet_read
from adapters.dlms.headend import directory_from_settings
from adapters.dlms.jobs import read_job
from hes.cli import fleet_manifest
from hes.simulator.fleet import Fleet, SimulatorThread
from hes.simulator.meter import interval_end, interval_index
from hub.bootstrap import App, bootstrap, open_store
from hub.settings import Settings, load_settings
from mdm.ports import OutboxItem
from tests.conftest import free_port
from tests.unit.hub.conftest import add_meters


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    f = Fleet.build(3, free_port(), seed=8)
    with SimulatorThread(f):
        yield f


@pytest.fixture
def settings(tmp_path: Path, sqlite_url: str, fleet: Fleet) -> Settings:
    manifest = tmp_path / "fleet.json"
    manifest.write_text(json.dumps(fleet_manifest(fleet)))
    s = load_settings(database_url=sqlite_url)
    return s.model_copy(
        update={
            # [amqp] enabled: events go to the outbox (no broker is reached in these tests)
            "amqp": s.amqp.model_copy(
                update={"enabled": True, "url": "amqp://nobody@127.0.0.1:1//"}
            ),
            "hes": s.hes.model_copy(
                update={"manifest": manifest, "simulated_seed": 8, "concurrency": 2}
            ),
        }
    )


@pytest.fixture
def app(settings: Settings, fleet: Fleet) -> Iterator[App]:
    a = bootstrap(settings, migrate=True)
    add_meters(a, *(f"MTR-{m.serial}" for m in fleet.meters), install=False)
    yield a
    a.close()


def outbox(app: App) -> list[OutboxItem]:
    with app.uow_factory() as uow:
        return uow.outbox.claim_due("amqp", datetime.now(UTC) + timedelta(days=1), 1000)


def window() -> tuple[datetime, datetime]:
    end = interval_end(interval_index(datetime.now(UTC)) - 1)
    return end - timedelta(hours=2), end


def test_scheduled_fleet_read_publishes_meter_alarms_once(
    app: App, settings: Settings, fleet: Fleet
) -> None:
    fleet.meters[2].faults.tamper_at = datetime.now(UTC).replace(microsecond=0) - timedelta(
        minutes=40
    )
    start, end = window()
    done = fleet_read(settings, start, end, store=open_store)
    assert done.outcomes == {"done": 3}
    assert done.stats["events"] == 1
    items = outbox(app)
    [events] = [i for i in items if i.noun == "EndDeviceEvents"]
    assert events.destination == "created.EndDeviceEvents"
    assert b'ref="3.12.29.212"' in events.body
    assert f"MTR-{fleet.meters[2].serial}".encode() in events.body
    assert [i.destination for i in items if i.noun == "MeterReadings"] == [
        "created.MeterReadings"
    ]  # one message for the batch of 3 meters
    again = fleet_read(settings, start, end, store=open_store)
    assert again.stats["events"] == 0
    assert len([i for i in outbox(app) if i.noun == "EndDeviceEvents"]) == 1


def test_engine_read_job_publishes_meter_alarms(app: App, settings: Settings, fleet: Fleet) -> None:
    directory = directory_from_settings(settings.hes)
    assert directory is not None
    fleet.meters[0].faults.outages = [
        (datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=50),) * 2
    ]
    worker = EngineWorker(settings, app.uow_factory, directory, concurrency=2)
    try:
        start, end = window()
        meters = [f"MTR-{m.serial}" for m in fleet.meters]
        body = json.dumps(read_job("JOB-A", meters, start, end, events=True)).encode()
        reply, retry = worker.execute(body, 0)
    finally:
        worker.close()
        worker.meters.shutdown()
        worker.jobs.shutdown()
    assert not retry
    assert reply is not None
    answer = json.loads(reply)
    assert answer["stats"]["events"] == 2  # power down and power up
    [events] = [i for i in outbox(app) if i.noun == "EndDeviceEvents"]
    assert b'ref="3.26.0.85"' in events.body
    assert b'ref="26.26.0.216"' in events.body
