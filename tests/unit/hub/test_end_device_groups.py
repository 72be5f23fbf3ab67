"""EndDeviceGroups end to end on SQLite: managed through the CIM noun, targeted by
EndDeviceControls and MeterReadSchedule, run against simulated meters over real TCP."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from cim_schemas.profiles.end_device_groups import parse_end_device_groups
from cim_schemas.profiles.meter_read_schedule import parse_meter_read_schedule
from cim_schemas.xml import parse_bytes
from hes.simulator.fleet import Fleet, SimulatorThread
from hes.simulator.meter import ControlState
from hub.bootstrap import App
from hub.headend_scheduler import floor_quarter
from hub.samples import end_device_controls, end_device_groups, meter_read_schedule
from mdm.hes_jobs import JobKind
from mdm.model import DeviceRef
from tests.conftest import free_port
from tests.unit.hub.conftest import add_meters
from tests.unit.hub.test_headend_jobs import PROFILE_15, FakeClock, headend, job, utility_id
from tests.unit.hub.test_headend_routes import (
    DISCONNECT,
    fleet_app,
    hub_settings,
    mrids,
    relay,
    send,
)

EDG = "{http://iec.ch/TC57/2011/EndDeviceGroups#}"
BASE = "/RequestMessage/Payload/EndDeviceGroups/EndDeviceGroup"


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    f = Fleet.build(3, free_port(), seed=17)
    with SimulatorThread(f):
        yield f


@pytest.fixture
def app(sqlite_url: str, fleet: Fleet) -> Iterator[App]:
    application = fleet_app(hub_settings(sqlite_url), fleet)
    add_meters(application, "MTR-NO-ADDRESS")  # in the MDM, not in the fleet
    yield application
    application.close()


def members(app: App, group: str) -> list[str]:
    uid = utility_id(app)
    with app.uow_factory() as uow:
        found = uow.end_device_groups.find(uid, DeviceRef(mrid=group))
        assert found is not None
        assert found.id is not None
        return uow.end_device_groups.members(found.id)


def test_groups_are_managed_through_cim(app: App, fleet: Fleet) -> None:
    m = mrids(fleet)
    created = send(
        app,
        end_device_groups(
            "create",
            [
                {"mrid": "G-FW", "name": "firmware wave 1", "description": "2.1", "devices": m[:2]},
                {"mrid": "G-BAD", "name": "bad", "devices": [m[0], "MTR-NOPE", "MTR-GONE"]},
                {"mrid": "G-FW", "name": "again", "devices": m[:1]},
            ],
        ),
    )
    assert created.result == "PARTIAL"
    assert [(e.code, e.xpath, e.object_id) for e in created.errors] == [
        ("2001", f"{BASE}[2]/EndDevices[2]", "MTR-NOPE"),
        ("2001", f"{BASE}[2]/EndDevices[3]", "MTR-GONE"),
        ("2007", f"{BASE}[3]", "G-FW"),
    ]
    assert created.counts == {"groups": 3, "applied": 1, "added": 2, "removed": 0}
    echo = parse_end_device_groups(
        parse_bytes(created.reply).getroot().find(f".//{EDG}EndDeviceGroups")  # type: ignore[arg-type]
    )
    assert [(g.mrid, g.name(), g.description) for g in echo.end_device_groups] == [
        ("G-FW", "firmware wave 1", "2.1")
    ]
    assert members(app, "G-FW") == sorted(m[:2])
    uid = utility_id(app)
    with app.uow_factory() as uow:  # the refused group left nothing behind
        assert uow.end_device_groups.find(uid, DeviceRef(mrid="G-BAD")) is None

    changed = send(
        app, end_device_groups("change", [{"name": "firmware wave 1", "devices": m[1:]}])
    )
    assert changed.result == "OK", changed.errors
    assert changed.counts == {"groups": 1, "applied": 1, "added": 1, "removed": 1}
    assert members(app, "G-FW") == sorted(m[1:])
    kept = send(app, end_device_groups("change", [{"mrid": "G-FW", "description": "2.2"}]))
    assert kept.result == "OK", kept.errors
    assert members(app, "G-FW") == sorted(m[1:])  # no EndDevices: membership kept

    closed = send(app, end_device_groups("close", [{"mrid": "G-FW"}, {"mrid": "G-NONE"}]))
    assert [(e.code, e.xpath) for e in closed.errors] == [("2008", f"{BASE}[2]")]
    again = send(app, end_device_groups("close", [{"mrid": "G-FW"}]))
    assert [e.code for e in again.errors] == ["2009"]
    cancel = send(app, end_device_groups("cancel", [{"mrid": "G-FW"}]))
    assert [e.code for e in cancel.errors] == ["1006"]
    deleted = send(app, end_device_groups("delete", [{"mrid": "G-FW"}]))
    assert deleted.result == "OK", deleted.errors
    with app.uow_factory() as uow:
        assert uow.end_device_groups.find(uid, DeviceRef(mrid="G-FW")) is None


def test_a_disconnect_job_for_a_group_runs_on_its_meters(app: App, fleet: Fleet) -> None:
    m = mrids(fleet)
    made = send(
        app,
        end_device_groups(
            "create",
            [
                {"mrid": "ROUND-7", "name": "disconnection round 7", "devices": [m[0], m[2]]},
                {"mrid": "EMPTY", "name": "empty"},
                {"mrid": "PARTLY", "devices": [m[1], "MTR-NO-ADDRESS"]},
            ],
        ),
    )
    assert made.result == "OK", made.errors
    send(app, end_device_groups("close", [{"mrid": "PARTLY"}]))
    outcome = send(
        app,
        end_device_controls(
            "create",
            [
                {"type": DISCONNECT, "mrid": "JOB-7", "groups": ["ROUND-7"]},
                {"type": DISCONNECT, "groups": ["EMPTY"]},
                {"type": DISCONNECT, "groups": ["NO-SUCH-GROUP"]},
                {"type": DISCONNECT, "groups": ["PARTLY"]},
            ],
        ),
    )
    base = "/RequestMessage/Payload/EndDeviceControls/EndDeviceControl"
    assert [(e.code, e.xpath) for e in outcome.errors] == [
        ("2015", f"{base}[2]/EndDeviceGroups[1]"),
        ("2015", f"{base}[3]/EndDeviceGroups[1]"),
        ("2015", f"{base}[4]/EndDeviceGroups[1]"),
    ]
    assert "has no member" in outcome.errors[0].reason
    assert "does not exist" in outcome.errors[1].reason
    assert "is closed" in outcome.errors[2].reason
    assert outcome.counts == {"controls": 4, "accepted": 1}
    row = job(app, JobKind.CONTROL, "JOB-7")
    assert sorted(row.targets) == sorted([m[0], m[2]])  # resolved when accepted
    [report] = headend(app).run_due()
    assert report.state == "succeeded"
    assert sorted(r.device_mrid for r in report.results) == sorted([m[0], m[2]])
    assert relay(fleet, 0) == ControlState.DISCONNECTED
    assert relay(fleet, 1) == ControlState.CONNECTED
    assert relay(fleet, 2) == ControlState.DISCONNECTED


def test_a_group_member_without_head_end_address_is_reported(app: App, fleet: Fleet) -> None:
    m = mrids(fleet)
    send(app, end_device_groups("create", [{"mrid": "MIXED", "devices": [m[1], "MTR-NO-ADDRESS"]}]))
    outcome = send(app, end_device_controls("create", [{"type": DISCONNECT, "groups": ["MIXED"]}]))
    assert outcome.result == "PARTIAL"
    assert [(e.code, e.object_id) for e in outcome.errors] == [("2001", "MTR-NO-ADDRESS")]
    [report] = headend(app).run_due()
    assert [r.device_mrid for r in report.results] == [m[1]]
    assert relay(fleet, 1) == ControlState.DISCONNECTED


def test_a_recurring_read_of_a_group_follows_its_membership(app: App, fleet: Fleet) -> None:
    m = mrids(fleet)
    send(app, end_device_groups("create", [{"mrid": "READS", "devices": [m[0]]}]))
    start = floor_quarter(datetime.now(UTC)) - timedelta(hours=4)
    clock = FakeClock(start - timedelta(minutes=5))
    headend(app).clock = clock
    created = send(
        app,
        meter_read_schedule(
            [],
            start,
            start + timedelta(minutes=150),
            reading_types=[PROFILE_15],
            mrid="GROUP-HOURLY",
            recurrence_period=3600,
            groups=["READS"],
        ),
    )
    assert created.result == "OK", created.errors
    assert created.counts == {"meters": 1, "scheduled": 1, "groups": 1}
    echo = parse_meter_read_schedule(
        parse_bytes(created.reply)
        .getroot()
        .find(  # type: ignore[arg-type]
            ".//{http://iec.ch/TC57/2011/MeterReadSchedule#}MeterReadSchedule"
        )
    )
    assert [g.mrid for g in echo.end_device_groups] == ["READS"]

    clock.now = start + timedelta(minutes=1)
    headend(app).run_due()
    row = job(app, JobKind.READ, "GROUP-HOURLY")
    assert row.last_outcome is not None
    assert "meters=1 readings=4" in row.last_outcome

    # the group changes between runs: the next run reads its members then
    changed = send(app, end_device_groups("change", [{"mrid": "READS", "devices": m[1:]}]))
    assert changed.result == "OK", changed.errors
    clock.now = start + timedelta(hours=1, minutes=1)
    headend(app).run_due()
    row = job(app, JobKind.READ, "GROUP-HOURLY")
    assert row.last_outcome is not None
    assert "meters=2 readings=8" in row.last_outcome
    uid = utility_id(app)
    with app.uow_factory() as uow:
        found = [uow.devices.find(uid, DeviceRef(mrid=x)) for x in m]
        ids = {d.mrid: d.id for d in found if d is not None and d.id is not None}
        second = start + timedelta(hours=1)
        by_meter = {
            x: len(list(uow.readings.query([ids[x]], [PROFILE_15], start, second))) for x in m
        }
    assert by_meter == {m[0]: 0, m[1]: 4, m[2]: 4}  # second run: the new members only

    # a closed group reads nothing at the next run; the schedule goes on
    send(app, end_device_groups("close", [{"mrid": "READS"}]))
    clock.now = start + timedelta(hours=2, minutes=1)
    headend(app).run_due()
    row = job(app, JobKind.READ, "GROUP-HOURLY")
    assert row.last_outcome is not None
    assert "meters=0" in row.last_outcome
