"""The head-end job table on SQLite: control jobs and read schedules written in the
request's transaction, claimed with a lease, cancelled in the cancel's transaction;
future and recurring MeterReadSchedules run by the scheduler tick on a fake clock,
against simulated meters over real TCP."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from adapters.dlms import DlmsHeadEnd, MeterDirectory
from cim_schemas.profiles.common import DateTimeInterval, IdentifiedObject
from cim_schemas.profiles.meter_read_schedule import (
    MeterReadSchedule,
    TimePoint,
    TimeSchedule,
    parse_meter_read_schedule,
    render_meter_read_schedule,
)
from cim_schemas.schemas import validate
from cim_schemas.xml import parse_bytes
from hes.simulator.fleet import Fleet, SimulatorThread
from hes.simulator.meter import ControlState
from hub.bootstrap import App, bootstrap
from hub.headend import ControlRequest
from hub.headend_scheduler import floor_quarter, next_due, run_time
from hub.nouns.read_timing import pattern_seconds
from hub.samples import end_device_controls, meter_read_schedule
from mdm.hes_jobs import HeadEndJob, JobKind
from mdm.model import DeviceRef
from tests.conftest import free_port
from tests.unit.hub.test_headend_routes import (
    CLOCK_SET,
    DISCONNECT,
    events,
    fleet_app,
    hub_settings,
    mrids,
    relay,
    send,
)

MRS = "{http://iec.ch/TC57/2011/MeterReadSchedule#}"
PROFILE_15 = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"  # +A, 15-minute deltas, kWh


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    f = Fleet.build(3, free_port(), seed=11)
    with SimulatorThread(f):
        yield f


@pytest.fixture
def app(sqlite_url: str, fleet: Fleet) -> Iterator[App]:
    application = fleet_app(hub_settings(sqlite_url), fleet)
    yield application
    application.close()


def headend(app: App) -> DlmsHeadEnd:
    assert isinstance(app.headend, DlmsHeadEnd)
    return app.headend


def utility_id(app: App) -> int:
    with app.uow_factory() as uow:
        utility = uow.utilities.get(app.settings.default_utility)
    assert utility is not None
    assert utility.id is not None
    return utility.id


def job(app: App, kind: JobKind, mrid: str) -> HeadEndJob:
    uid = utility_id(app)
    with app.uow_factory() as uow:
        found = uow.hes_jobs.get(uid, kind, mrid)
    assert found is not None, mrid
    return found


def later() -> datetime:
    return datetime.now(UTC) + timedelta(hours=1)


# -- control jobs ------------------------------------------------------------------------------


def test_the_request_and_the_job_row_commit_together(app: App, fleet: Fleet) -> None:
    outcome = send(
        app,
        end_device_controls(
            "create", [{"type": DISCONNECT, "mrid": "ROW", "devices": mrids(fleet)[:2]}]
        ),
    )
    assert outcome.result == "OK", outcome.errors
    row = job(app, JobKind.CONTROL, "ROW")
    assert (row.state, row.control_type, row.targets) == (
        "scheduled",
        DISCONNECT,
        tuple(mrids(fleet)[:2]),
    )
    assert row.message_id == outcome.message_id
    assert ControlRequest.from_json(row.spec).devices == row.targets
    [report] = headend(app).run_due()
    assert report.state == "succeeded"
    done = job(app, JobKind.CONTROL, "ROW")
    assert (done.state, done.runs, done.claimed_by, done.lease_until) == (
        "succeeded",
        1,
        None,
        None,
    )
    assert done.finished_at is not None
    assert done.last_outcome is not None
    assert "3.31.0.68" in done.last_outcome


def test_a_rolled_back_cancel_does_not_cancel(app: App, fleet: Fleet) -> None:
    soon = datetime.now(UTC) + timedelta(seconds=1)
    created = send(
        app,
        end_device_controls(
            "create",
            [{"type": DISCONNECT, "mrid": "KEEP", "devices": mrids(fleet)[:1], "start": soon}],
        ),
    )
    assert created.result == "OK", created.errors
    uid = utility_id(app)
    with app.uow_factory() as uow:
        request = headend(app).cancel(uow, uid, "KEEP")
        assert request.job_id == "KEEP"
        inside = uow.hes_jobs.get(uid, JobKind.CONTROL, "KEEP")
        assert inside is not None
        assert inside.state == "cancelled"  # seen in its own transaction
        uow.rollback()  # the cancel's transaction fails
    assert job(app, JobKind.CONTROL, "KEEP").state == "scheduled"
    clock = FakeClock(soon + timedelta(seconds=1))
    headend(app).clock = clock
    [report] = headend(app).run_due()
    assert report.request.job_id == "KEEP"
    assert relay(fleet, 0) == ControlState.DISCONNECTED
    assert not events(app, job="KEEP", state="cancelled")


def test_a_duplicate_mrid_of_a_finished_job_is_2007(app: App, fleet: Fleet) -> None:
    first = send(
        app,
        end_device_controls(
            "create", [{"type": CLOCK_SET, "mrid": "ONCE", "devices": mrids(fleet)[:1]}]
        ),
    )
    assert first.result == "OK", first.errors
    [report] = headend(app).run_due()
    assert report.state == "succeeded"
    again = send(
        app,
        end_device_controls(
            "create",
            [
                {"type": DISCONNECT, "mrid": "ONCE", "devices": mrids(fleet)[1:2]},
                {"type": CLOCK_SET, "mrid": "OTHER", "devices": mrids(fleet)[1:2]},
            ],
        ),
    )
    assert again.result == "PARTIAL"  # the transaction went on: OTHER is accepted
    [error] = again.errors
    assert error.code == "2007"
    assert error.xpath == "/RequestMessage/Payload/EndDeviceControls/EndDeviceControl[1]/mRID"
    assert "ONCE" in error.reason
    assert job(app, JobKind.CONTROL, "ONCE").control_type == CLOCK_SET  # untouched
    assert job(app, JobKind.CONTROL, "OTHER").state == "scheduled"
    assert relay(fleet, 1) == ControlState.CONNECTED
    # a cancelled job's mRID is not reused either
    send(
        app,
        end_device_controls(
            "create",
            [{"type": CLOCK_SET, "mrid": "GONE", "devices": mrids(fleet)[:1], "start": later()}],
        ),
    )
    assert send(app, end_device_controls("cancel", [{"type": CLOCK_SET, "mrid": "GONE"}])).ok
    reuse = send(
        app,
        end_device_controls(
            "create", [{"type": CLOCK_SET, "mrid": "GONE", "devices": mrids(fleet)[:1]}]
        ),
    )
    assert [e.code for e in reuse.errors] == ["2007"]


def test_an_expired_lease_is_taken_over_and_the_old_owner_records_nothing(
    sqlite_url: str, app: App, fleet: Fleet
) -> None:
    created = send(
        app,
        end_device_controls(
            "create", [{"type": DISCONNECT, "mrid": "LEASED", "devices": mrids(fleet)[:1]}]
        ),
    )
    assert created.result == "OK", created.errors
    crashed = headend(app).scheduler
    [claimed] = crashed.claim()  # ... and the process dies before running it
    assert (claimed.state, claimed.claimed_by, claimed.attempts) == ("running", crashed.owner, 1)

    other = bootstrap(hub_settings(sqlite_url), meters=MeterDirectory.from_fleet(fleet))
    try:
        taker = headend(other)
        assert taker.run_due() == []  # the lease holds
        assert relay(fleet, 0) == ControlState.CONNECTED
        taker.clock = FakeClock(datetime.now(UTC) + timedelta(seconds=crashed.lease_seconds + 1))
        [report] = taker.run_due()
        assert report.state == "succeeded"
        row = job(app, JobKind.CONTROL, "LEASED")
        assert (row.state, row.runs) == ("succeeded", 1)
        assert relay(fleet, 0) == ControlState.DISCONNECTED
        # the first owner comes back with a report: its lease is gone, nothing recorded
        assert app.journal is not None
        assert app.journal.record_report(report, owner=crashed.owner) == []
        assert len(events(app, job="LEASED", state="succeeded")) == 1
    finally:
        other.close()


def test_a_job_claimed_too_often_fails_on_every_meter(app: App, fleet: Fleet) -> None:
    created = send(
        app,
        end_device_controls(
            "create", [{"type": DISCONNECT, "mrid": "CURSED", "devices": mrids(fleet)[:2]}]
        ),
    )
    assert created.result == "OK", created.errors
    scheduler = headend(app).scheduler
    clock = FakeClock(datetime.now(UTC))
    scheduler.clock = clock
    for _ in range(scheduler.max_attempts):  # schedulers that die holding it
        [claimed] = scheduler.claim()
        clock.now += timedelta(seconds=scheduler.lease_seconds + 1)
    assert claimed.attempts == scheduler.max_attempts
    [report] = headend(app).run_due()
    assert report.state == "failed"
    assert [r.event_type for r in report.results] == ["3.31.0.85", "3.31.0.85"]
    assert "gave up" in report.results[0].detail
    assert job(app, JobKind.CONTROL, "CURSED").state == "failed"
    assert all(m.control_state == ControlState.CONNECTED for m in fleet.meters)


# -- read schedules ----------------------------------------------------------------------------


def reply_schedule(outcome_reply: bytes) -> TimeSchedule:
    root = parse_bytes(outcome_reply).getroot()
    assert not validate(root), validate(root)  # the reply is valid against our XSDs
    payload = root.find(f".//{MRS}MeterReadSchedule")
    assert payload is not None
    [ts] = parse_meter_read_schedule(payload).time_schedules
    return ts


def test_a_recurring_schedule_runs_twice_on_a_fake_clock_and_stops_at_its_end(
    app: App, fleet: Fleet
) -> None:
    meters = mrids(fleet)[:2]
    start = floor_quarter(datetime.now(UTC)) - timedelta(hours=4)
    end = start + timedelta(minutes=90)  # runs at start and start + 1 h
    clock = FakeClock(start - timedelta(minutes=5))
    headend(app).clock = clock
    created = send(
        app,
        meter_read_schedule(
            meters, start, end, reading_types=[PROFILE_15], mrid="HOURLY", recurrence_period=3600
        ),
    )
    assert created.result == "OK", created.errors
    assert created.counts == {"meters": 2, "scheduled": 1}
    ts = reply_schedule(created.reply)
    assert ts.mrid == "HOURLY"
    assert ts.recurrence_period == Decimal(3600)
    assert ts.time_points == (TimePoint(start, 1),)  # the next run

    assert headend(app).run_due() == []  # not due yet on the scheduler's clock
    assert job(app, JobKind.READ, "HOURLY").runs == 0

    clock.now = start + timedelta(minutes=1)
    headend(app).run_due()
    row = job(app, JobKind.READ, "HOURLY")
    assert (row.state, row.runs, row.due_at) == ("active", 1, start + timedelta(hours=1))
    assert row.last_outcome is not None
    assert "meters=2 readings=8 stored=8" in row.last_outcome

    clock.now = start + timedelta(hours=1, minutes=1)
    headend(app).run_due()
    row = job(app, JobKind.READ, "HOURLY")
    assert (row.state, row.runs) == ("finished", 2)  # start + 2 h is after the end
    assert row.finished_at is not None

    clock.now = start + timedelta(hours=3)
    headend(app).run_due()
    assert job(app, JobKind.READ, "HOURLY").runs == 2

    # two runs of one hour each: 8 profile intervals per meter in (start - 1 h, start + 1 h]
    uid = utility_id(app)
    with app.uow_factory() as uow:
        found = [uow.devices.find(uid, DeviceRef(mrid=m)) for m in meters]
        ids = [d.id for d in found if d is not None and d.id is not None]
        stored = list(
            uow.readings.query(
                ids, [PROFILE_15], start - timedelta(hours=2), start + timedelta(hours=2)
            )
        )
    assert len(stored) == 2 * 8
    assert min(r.ts for r in stored) == start - timedelta(minutes=45)
    assert max(r.ts for r in stored) == start + timedelta(hours=1)


def test_a_full_rrule_is_stored_and_its_runs_follow_the_rule(app: App, fleet: Fleet) -> None:
    """Twice a day at 06:00 and 18:00 UTC from a start at 05:00: the first run is 06:00
    (the reply's TimePoints), then 18:00, then 06:00 the next day."""
    day = (datetime.now(UTC) + timedelta(days=2)).replace(hour=0, minute=0, second=0, microsecond=0)
    start = day + timedelta(hours=5)
    created = send(
        app,
        meter_read_schedule(
            mrids(fleet)[:1],
            start,
            None,
            mrid="TWICE-DAILY",
            recurrence_pattern="FREQ=DAILY;BYHOUR=6,18;BYMINUTE=0;BYSECOND=0",
        ),
    )
    assert created.result == "OK", created.errors
    ts = reply_schedule(created.reply)
    assert ts.time_points == (TimePoint(day + timedelta(hours=6), 1),)
    row = job(app, JobKind.READ, "TWICE-DAILY")
    assert (row.due_at, row.start_at, row.recurrence_seconds) == (
        day + timedelta(hours=6),
        start,
        86400,
    )
    assert (run_time(row), next_due(row)) == (day + timedelta(hours=6), day + timedelta(hours=18))
    assert next_due(replace(row, runs=1)) == day + timedelta(days=1, hours=6)


def test_a_future_schedule_is_answered_at_once_and_cancelled(app: App, fleet: Fleet) -> None:
    start = later()
    created = send(app, meter_read_schedule(mrids(fleet), start, None, mrid="TOMORROW"))
    assert created.result == "OK", created.errors
    ts = reply_schedule(created.reply)
    assert (ts.mrid, ts.time_points) == ("TOMORROW", (TimePoint(start, 1),))
    row = job(app, JobKind.READ, "TOMORROW")
    assert (row.state, row.due_at, row.recurrence_seconds) == ("active", start, None)
    assert row.spec["window_seconds"] == 24 * 3600  # one run: the 24 hours up to it
    assert headend(app).run_due() == []

    cancel = send(app, meter_read_schedule([], verb="cancel", mrid="TOMORROW"))
    assert cancel.result == "OK", cancel.errors
    assert reply_schedule(cancel.reply).mrid == "TOMORROW"
    assert job(app, JobKind.READ, "TOMORROW").state == "cancelled"
    headend(app).clock = FakeClock(start + timedelta(minutes=1))
    headend(app).run_due()
    assert job(app, JobKind.READ, "TOMORROW").runs == 0  # never ran

    again = send(app, meter_read_schedule([], verb="cancel", mrid="TOMORROW"))
    assert [(e.code, e.xpath) for e in again.errors] == [
        ("2009", "/RequestMessage/Payload/MeterReadSchedule/TimeSchedule[1]/mRID")
    ]
    unknown = send(app, meter_read_schedule([], verb="cancel", mrid="NEVER"))
    assert [e.code for e in unknown.errors] == ["2008"]
    # a schedule mRID is not reused
    reuse = send(app, meter_read_schedule(mrids(fleet), later(), None, mrid="TOMORROW"))
    assert [(e.code, e.xpath) for e in reuse.errors] == [
        ("2007", "/RequestMessage/Payload/MeterReadSchedule/TimeSchedule[1]/mRID")
    ]


def test_a_rolled_back_request_leaves_no_schedule(app: App, fleet: Fleet) -> None:
    uid = utility_id(app)
    with app.uow_factory() as uow:
        uow.hes_jobs.add(
            HeadEndJob(
                utility_id=uid,
                kind=JobKind.READ,
                mrid="ROLLED",
                state="active",
                spec={"utility": app.settings.default_utility, "window_seconds": 3600},
                targets=tuple(mrids(fleet)),
                due_at=datetime.now(UTC) - timedelta(minutes=1),
                created_at=datetime.now(UTC),
                start_at=datetime.now(UTC) - timedelta(minutes=1),
            )
        )
        uow.rollback()
    headend(app).run_due()
    with app.uow_factory() as uow:
        assert uow.hes_jobs.get(uid, JobKind.READ, "ROLLED") is None
        assert uow.hes_jobs.list() == []


BASE = "/RequestMessage/Payload/MeterReadSchedule"


@pytest.mark.parametrize(
    ("kwargs", "code", "xpath", "words"),
    [
        (
            {"start": None, "end": None, "recurrence_period": 3600},
            "2013",
            f"{BASE}/TimeSchedule[1]/scheduleInterval/start",
            "needs scheduleInterval/start",
        ),
        (
            {"end": "before", "recurrence_period": 3600},
            "2013",
            f"{BASE}/TimeSchedule[1]/scheduleInterval/end",
            "is not after its start",
        ),
        (
            {"recurrence_period": 600},
            "2013",
            f"{BASE}/TimeSchedule[1]/recurrencePeriod",
            "at least 900",
        ),
        (
            {"recurrence_pattern": "FREQ=FORTNIGHTLY"},
            "2013",
            f"{BASE}/TimeSchedule[1]/recurrencePattern",
            "FREQ must be one of",
        ),
        (
            {"recurrence_pattern": "FREQ=HOURLY", "recurrence_period": 86400},
            "2013",
            f"{BASE}/TimeSchedule[1]/recurrencePattern",
            "disagree",
        ),
        (
            {"meters": ["MTR-NOT-THERE"], "recurrence_period": 3600},
            "2001",
            f"{BASE}/EndDevice[1]",
            "unknown meter",
        ),
    ],
)
def test_bad_schedules_are_refused_with_their_xpath(
    app: App, fleet: Fleet, kwargs: dict[str, object], code: str, xpath: str, words: str
) -> None:
    start = later()
    args: dict[str, object] = {"start": start, "end": start + timedelta(days=1), **kwargs}
    if args["end"] == "before":
        args["end"] = start - timedelta(hours=1)
    meters = args.pop("meters", mrids(fleet))
    outcome = send(app, meter_read_schedule(meters, mrid="BAD", **args))
    assert outcome.result == "FAILED"
    assert [(e.code, e.xpath) for e in outcome.errors] == [(code, xpath)]
    assert words in outcome.errors[0].reason
    with app.uow_factory() as uow:
        assert uow.hes_jobs.list() == []  # nothing stored
    assert outcome.dead_letter_id is not None  # the input is kept


def test_recurrence_patterns() -> None:
    assert pattern_seconds("FREQ=DAILY") == 86400
    assert pattern_seconds("RRULE:FREQ=HOURLY;INTERVAL=6") == 6 * 3600
    assert pattern_seconds("freq=weekly") == 7 * 86400
    # the whole RRULE now (mdm.recurrence); the period is FREQ x INTERVAL
    assert pattern_seconds("FREQ=DAILY;BYHOUR=2") == 86400
    assert pattern_seconds("FREQ=MONTHLY;BYDAY=MO;BYSETPOS=-1") == 31 * 86400
    for bad, words in [
        ("FREQ=DAILY;INTERVAL=0", "INTERVAL"),
        ("DAILY", "not NAME=VALUE"),
        ("FREQ=DAILY;COUNT=2;UNTIL=20270101T000000Z", "COUNT and UNTIL exclude each other"),
        ("FREQ=DAILY;DTSTART=20260101T000000Z", "DTSTART is not an RRULE part"),
    ]:
        with pytest.raises(ValueError, match=words):
            pattern_seconds(bad)


def test_the_schema_takes_time_points() -> None:
    t0 = datetime(2026, 3, 1, 2, tzinfo=UTC)
    schedule = MeterReadSchedule(
        end_devices=(IdentifiedObject("MTR-1"),),
        time_schedules=(
            TimeSchedule(
                mrid="S",
                recurrence_pattern="FREQ=DAILY",
                recurrence_period=Decimal(86400),
                schedule_interval=DateTimeInterval(t0, None),
                time_points=(TimePoint(t0, 1), TimePoint(t0 + timedelta(days=1), 2)),
            ),
        ),
    )
    from cim_schemas.schemas import load_schema

    element = render_meter_read_schedule(schedule)
    assert load_schema("profiles/MeterReadSchedule.xsd").validate(element)
    assert parse_meter_read_schedule(element) == schedule
    bad = render_meter_read_schedule(schedule)
    point = bad.find(f".//{MRS}TimePoints/{MRS}sequenceNumber")
    assert point is not None
    point.text = "first"
    assert not load_schema("profiles/MeterReadSchedule.xsd").validate(bad)
