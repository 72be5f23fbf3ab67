"""Alarms through the hub: an on-demand MeterReadSchedule publishes the meters' new events
and the readings read, correlated to the request; a control job against a meter with wrong
keys records and publishes a security event. Hub pipeline, head-end, simulated meters over
real TCP, SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from adapters.dlms import MeterDirectory
from adapters.memory import MemoryAdapter
from hes.security.gcm import SecurityKeys
from hes.simulator.fleet import Fleet, SimulatorThread
from hub.bootstrap import App, bootstrap
from hub.messages import Outcome
from hub.samples import end_device_controls, meter_read_schedule
from hub.settings import load_settings
from mdm.model import EndDeviceEvent
from mdm.ports import OutboxItem
from tests.conftest import free_port
from tests.unit.hub.conftest import add_meters


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    f = Fleet.build(3, free_port(), seed=16)
    with SimulatorThread(f):
        yield f


def make(sqlite_url: str, fleet: Fleet, wrong_keys: int | None = None) -> App:
    settings = load_settings(database_url=sqlite_url)
    settings = settings.model_copy(
        update={
            "amqp": settings.amqp.model_copy(update={"enabled": True}),
            "soap": settings.soap.model_copy(
                update={"subscribers": {"MeterReadings": ["http://127.0.0.1:9/ws/Send"]}}
            ),
            "hes": settings.hes.model_copy(update={"timeout": 1.0, "attempts": 1}),
        }
    )
    meters = dict(MeterDirectory.from_fleet(fleet).items())
    if wrong_keys is not None:
        mrid = f"MTR-{fleet.meters[wrong_keys].serial}"
        target = meters[mrid]
        meters[mrid] = replace(
            target,
            credentials=replace(target.credentials, keys=SecurityKeys(bytes(16), bytes(16))),
        )
    app = bootstrap(settings, migrate=True, meters=meters)
    add_meters(app, *(f"MTR-{m.serial}" for m in fleet.meters))
    return app


@pytest.fixture
def app(sqlite_url: str, fleet: Fleet) -> Iterator[App]:
    a = make(sqlite_url, fleet)
    yield a
    a.close()


def send(app: App, body: bytes) -> Outcome:
    return MemoryAdapter(app.pipeline).request(body, source="cis")


def stored(app: App) -> list[EndDeviceEvent]:
    with app.uow_factory() as uow:
        utility = uow.utilities.get(app.settings.default_utility)
        assert utility is not None
        assert utility.id is not None
        return uow.events.query(utility.id, None, None, None)


def outbox(app: App, channel: str = "amqp") -> list[OutboxItem]:
    with app.uow_factory() as uow:
        return uow.outbox.claim_due(channel, datetime.now(UTC) + timedelta(days=1), 1000)


def test_on_demand_read_publishes_new_events_and_readings(app: App, fleet: Fleet) -> None:
    m0, m1 = (f"MTR-{m.serial}" for m in fleet.meters[:2])
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    fleet.meters[0].faults.tamper_at = end.replace(minute=0) - timedelta(hours=1)
    outcome = send(
        app, meter_read_schedule([m0, m1], end - timedelta(hours=3), end, message_id="MRS-1")
    )
    assert outcome.result == "OK", outcome.errors
    assert outcome.counts["events"] == 1
    [tamper] = stored(app)
    assert (tamper.device_mrid, tamper.event_type) == (m0, "3.12.29.212")
    items = outbox(app)
    assert sorted((i.noun, i.destination, i.correlation_id) for i in items) == [
        ("EndDeviceEvents", "created.EndDeviceEvents", "MRS-1"),
        ("MeterReadings", "created.MeterReadings", "MRS-1"),
    ]
    readings = next(i for i in items if i.noun == "MeterReadings").body
    assert m0.encode() in readings
    assert m1.encode() in readings
    [soap] = outbox(app, "soap")  # [soap] subscribers: MeterReadings only
    assert (soap.noun, soap.headers["service"]) == ("MeterReadings", "SendMeterReadings")

    # read again: the same event is not stored or published twice
    again = send(
        app, meter_read_schedule([m0, m1], end - timedelta(hours=3), end, message_id="MRS-2")
    )
    assert again.result == "OK"
    assert again.counts["events"] == 0
    assert len(stored(app)) == 1
    # readings are published when the read stored or superseded some (registers are
    # stamped with the read's second: the same second again is all unchanged)
    changed = again.counts["stored"] + again.counts["superseded"]
    published = [i.noun for i in outbox(app) if i.correlation_id == "MRS-2"]
    assert published == (["MeterReadings"] if changed else [])


def test_read_of_a_meter_with_wrong_keys_publishes_a_security_event(
    sqlite_url: str, fleet: Fleet
) -> None:
    app = make(sqlite_url, fleet, wrong_keys=1)
    try:
        meters = [f"MTR-{m.serial}" for m in fleet.meters]
        end = datetime.now(UTC).replace(second=0, microsecond=0)
        outcome = send(
            app, meter_read_schedule(meters, end - timedelta(hours=1), end, message_id="MRS-K")
        )
        assert outcome.result == "PARTIAL"
        assert [(e.code, e.object_id) for e in outcome.errors] == [("2014", meters[1])]
        [security] = stored(app)
        assert security.device_mrid == meters[1]
        assert security.event_type.startswith("3.12.")
        assert security.details["source"] == "read"
        events = [i for i in outbox(app) if i.noun == "EndDeviceEvents"]
        assert [i.correlation_id for i in events] == ["MRS-K"]
        assert security.event_type.encode() in events[0].body
    finally:
        app.close()


def test_control_job_on_a_meter_with_wrong_keys_records_a_security_event(
    sqlite_url: str, fleet: Fleet
) -> None:
    app = make(sqlite_url, fleet, wrong_keys=0)
    try:
        meter = f"MTR-{fleet.meters[0].serial}"
        outcome = send(
            app,
            end_device_controls(
                "create", [{"type": "3.31.0.23", "mrid": "JOB-K", "devices": [meter]}]
            ),
        )
        assert outcome.result == "OK", outcome.errors
        assert app.headend is not None
        [report] = app.headend.run_due()
        assert report.state == "failed"
        assert [e.device_mrid for e in report.security_events] == [meter]
        job = [e for e in stored(app) if e.details.get("job") == "JOB-K"]
        found = {(e.event_type, e.details.get("state", ""), e.details.get("kind", "")) for e in job}
        assert ("3.31.0.85", "failed", "") in found  # the outcome
        security = [f for f in found if f[2]]
        assert len(security) == 1
        assert security[0][0].startswith("3.12.")
        assert security[0][2] in ("association_refused", "authentication_failed")
        [message] = [i for i in outbox(app) if i.noun == "EndDeviceEvents"]
        assert b'ref="3.31.0.85"' in message.body
        assert f'ref="{security[0][0]}"'.encode() in message.body
    finally:
        app.close()


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def test_a_recurring_schedule_run_publishes_new_events_and_readings(app: App, fleet: Fleet) -> None:
    from adapters.dlms import DlmsHeadEnd
    from hub.headend_scheduler import floor_quarter

    meters = [f"MTR-{m.serial}" for m in fleet.meters[:2]]
    start = floor_quarter(datetime.now(UTC)) - timedelta(hours=4)
    fleet.meters[0].faults.tamper_at = start - timedelta(minutes=20)  # in the first run's window
    headend = app.headend
    assert isinstance(headend, DlmsHeadEnd)
    clock = FakeClock(start - timedelta(minutes=5))
    headend.clock = clock
    created = send(
        app,
        meter_read_schedule(
            meters,
            start,
            start + timedelta(minutes=90),
            mrid="HOURLY",
            recurrence_period=3600,
            message_id="MRS-H",
        ),
    )
    assert created.result == "OK", created.errors
    assert outbox(app) == []  # scheduled: nothing read yet

    clock.now = start + timedelta(minutes=1)
    headend.run_due()
    [tamper] = stored(app)
    assert (tamper.device_mrid, tamper.event_type) == (meters[0], "3.12.29.212")
    first = outbox(app)
    assert sorted((i.noun, i.destination) for i in first) == [
        ("EndDeviceEvents", "created.EndDeviceEvents"),
        ("MeterReadings", "created.MeterReadings"),
    ]
    assert b'ref="3.12.29.212"' in next(i for i in first if i.noun == "EndDeviceEvents").body

    clock.now = start + timedelta(hours=1, minutes=1)  # the second run: the next hour
    headend.run_due()
    assert len(stored(app)) == 1  # the tamper is outside this window: not read again
    assert [i.noun for i in outbox(app)].count("EndDeviceEvents") == 1
    assert [i.noun for i in outbox(app)].count("MeterReadings") == 2
