"""``[[hes.read_schedules]]``: settings checked with the entry named, written to the job
table when the scheduler service starts (created, changed, removed; hub schedules
untouched), local-time runs across daylight-saving changes, and a configured schedule
run by the scheduler tick against simulated meters over real TCP (SQLite)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest

from adapters.dlms import MeterDirectory
from cim_schemas.errors import ConfigurationError
from hes.simulator.fleet import Fleet, SimulatorThread
from hub.bootstrap import App, bootstrap
from hub.bootstrap import hes_service as build
from hub.configured_schedules import schedule_row, series, sync_read_schedules
from hub.headend_scheduler import next_due, read_window, run_time
from hub.read_schedule_settings import ReadScheduleSettings
from hub.samples import meter_read_schedule
from hub.settings import load_settings
from mdm.hes_jobs import HeadEndJob, JobKind
from mdm.model import DeviceRef, Utility
from mdm.recurrence import Recurrence
from tests.conftest import free_port
from tests.unit.hub.conftest import add_meters
from tests.unit.hub.test_headend_jobs import FakeClock, headend, job, utility_id
from tests.unit.hub.test_headend_routes import events as stored_events
from tests.unit.hub.test_headend_routes import hub_settings, mrids, send

PROFILE_15 = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"  # +A, 15-minute deltas, kWh
BERLIN = "Europe/Berlin"


def entry(**values: Any) -> ReadScheduleSettings:
    return ReadScheduleSettings.model_validate(values)


def daily(**values: Any) -> ReadScheduleSettings:
    defaults: dict[str, Any] = {
        "name": "DAILY-PROFILE",
        "all_meters": True,
        "pattern": "FREQ=DAILY",
        "at": "01:30",
        "time_zone": BERLIN,
    }
    return entry(**(defaults | values))


def rows(app: App) -> dict[str, HeadEndJob]:
    with app.uow_factory() as uow:
        return {j.mrid: j for j in uow.hes_jobs.list() if j.kind is JobKind.READ}


def sync(app: App, entries: list[ReadScheduleSettings], now: datetime) -> Any:
    assert app.headend is not None
    return sync_read_schedules(
        app.uow_factory,
        entries,
        default_utility=app.settings.default_utility,
        addressable=app.headend.addressable,
        now=now,
    )


def set_area(app: App, area: str, *meters: str) -> None:
    """Put the usage points of ``meters`` (UP-<mrid>, tests.unit.hub.conftest) in ``area``."""
    uid = utility_id(app)
    with app.uow_factory() as uow:
        for m in meters:
            up = uow.usage_points.find(uid, DeviceRef(mrid=f"UP-{m}"))
            assert up is not None
            uow.usage_points.update(uid, replace(up, transformer_area=area))
        uow.commit()


# -- settings --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"time_zone": "Europe/Berln"}, "'Europe/Berln' is not a known IANA time zone"),
        ({"pattern": None, "period": 0}, "period 0 must be at least 900 seconds"),
        ({"pattern": "FREQ=FORTNIGHTLY"}, "pattern 'FREQ=FORTNIGHTLY': FREQ must be one of"),
        ({"pattern": "FREQ=DAILY;BYHOUR=1;BYMINUTE=0,5"}, "has runs 300 s apart, less than 900"),
        ({"pattern": "FREQ=DAILY;EVERY=2"}, "EVERY is not an RRULE part"),
        ({"pattern": "FREQ=WEEKLY;BYDAY=XX", "start": "2026-01-05"}, "invalid 'BYDAY': XX"),
        ({"pattern": "FREQ=DAILY", "period": 3600}, "(86400 s) and period 3600 s disagree"),
        ({"all_meters": False}, "no targets"),
        ({"areas": ["TA-1"]}, "all_meters reads every meter"),
        ({"pattern": "FREQ=WEEKLY"}, "is longer than a day: give start"),
        ({"pattern": None, "period": 7 * 3600}, "does not divide a day: give start"),
        ({"reading_types": ["0.0.0"]}, "reading_types '0.0.0'"),
        ({"window_seconds": 1000}, "window_seconds 1000 must be a whole number of quarter-hours"),
        ({"start": "2027-01-02T00:00:00", "end": "2027-01-01"}, "is not after start"),
        ({"period": "daily"}, "period: Input should be a valid integer"),
        ({"every": 3600}, "every: Extra inputs are not permitted"),
    ],
)
def test_bad_entries_are_refused_with_their_name(values: dict[str, Any], message: str) -> None:
    bad = {
        "name": "BAD-ONE",
        "all_meters": True,
        "pattern": "FREQ=DAILY",
        "time_zone": BERLIN,
    } | values
    with pytest.raises(ConfigurationError) as refused:
        load_settings(hes={"read_schedules": [bad]})
    text = str(refused.value)
    assert "hes.read_schedules.0" in text
    assert "read schedule 'BAD-ONE'" in text
    assert message in text


def test_names_are_unique_and_the_toml_form_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "amihub.toml"
    config.write_text(
        """
[[hes.read_schedules]]
name = "DAILY-PROFILE"
all_meters = true
reading_types = ["0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"]
pattern = "FREQ=DAILY"
at = 01:30:00
time_zone = "Europe/Berlin"
window_seconds = 93600
end = 2027-12-31

[[hes.read_schedules]]
name = "AREA-REGISTERS"
areas = ["TA-17"]
meters = ["MTR-1"]
period = 3600
at = "00:05"
events = false
start = 2026-12-01T00:00:00+01:00
""",
        encoding="utf-8",
    )
    monkeypatch.setenv("AMIHUB_CONFIG", str(config))
    first, second = load_settings().hes.read_schedules
    assert (first.at, first.period_seconds, first.window) == (time(1, 30), 86400, 93600)
    assert first.end_at == datetime(2027, 12, 31, tzinfo=UTC) - timedelta(hours=1)  # Berlin
    assert (second.areas, second.meters, second.events) == (("TA-17",), ("MTR-1",), False)
    assert second.start_at == datetime(2026, 11, 30, 23, tzinfo=UTC)
    config.write_text(
        config.read_text(encoding="utf-8").replace('"AREA-REGISTERS"', '"DAILY-PROFILE"'),
        encoding="utf-8",
    )
    with pytest.raises(ConfigurationError, match="'DAILY-PROFILE' is defined twice"):
        load_settings()


# -- local time across daylight-saving changes (pure, no clock) ------------------------------


def first_run(
    period: int, at: time, zone: str, now: datetime, anchor: date | None = None
) -> Recurrence:
    """The runs of a configured entry of ``period`` seconds at ``at`` from ``now``."""
    values: dict[str, Any] = {"period": period, "at": at, "time_zone": zone}
    if anchor is not None:
        values["start"] = anchor
    runs, _ = series(daily(pattern=None, **values), now)
    assert runs is not None
    return runs


def test_a_daily_run_in_local_time_follows_daylight_saving() -> None:
    # Europe/Berlin: 2026-03-29 02:00 CET -> 03:00 CEST; 2026-10-25 03:00 CEST -> 02:00 CET
    spring = first_run(86400, time(1, 30), BERLIN, datetime(2026, 3, 27, 12, tzinfo=UTC))
    assert [spring.run(n) for n in range(4)] == [
        datetime(2026, 3, 28, 0, 30, tzinfo=UTC),  # 01:30 CET
        datetime(2026, 3, 29, 0, 30, tzinfo=UTC),  # 01:30 CET, before the change at 02:00
        datetime(2026, 3, 29, 23, 30, tzinfo=UTC),  # 01:30 CEST: 23 hours later
        datetime(2026, 3, 30, 23, 30, tzinfo=UTC),
    ]
    autumn = first_run(86400, time(1, 30), BERLIN, datetime(2026, 10, 24, 0, 0, tzinfo=UTC))
    assert [autumn.run(n) for n in range(3)] == [
        datetime(2026, 10, 24, 23, 30, tzinfo=UTC),  # 25 Oct 01:30 CEST
        datetime(2026, 10, 26, 0, 30, tzinfo=UTC),  # 26 Oct 01:30 CET: 25 hours later
        datetime(2026, 10, 27, 0, 30, tzinfo=UTC),
    ]
    assert spring.zone == BERLIN
    # a time in the spring gap is taken forward by the gap on that day only; a repeated
    # one is the first of the two
    gap = first_run(86400, time(2, 30), BERLIN, datetime(2026, 3, 28, 12, tzinfo=UTC))
    assert [gap.run(n) for n in range(3)] == [
        datetime(2026, 3, 29, 1, 30, tzinfo=UTC),  # 03:30 CEST: 02:30 does not exist
        datetime(2026, 3, 30, 0, 30, tzinfo=UTC),  # 02:30 CEST again
        datetime(2026, 3, 31, 0, 30, tzinfo=UTC),
    ]
    twice = first_run(86400, time(2, 30), BERLIN, datetime(2026, 10, 24, 12, tzinfo=UTC))
    assert twice.run(0) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 CEST, the first
    # the first run is the next one at or after "now"; a weekly one counts from its start
    at_run = first_run(86400, time(1, 30), BERLIN, datetime(2026, 3, 29, 0, 30, tzinfo=UTC))
    assert at_run.run(0) == datetime(2026, 3, 29, 0, 30, tzinfo=UTC)
    weekly = first_run(
        7 * 86400, time(6, 0), BERLIN, datetime(2026, 10, 23, 12, tzinfo=UTC), date(2026, 1, 5)
    )
    assert (weekly.run(0), weekly.run(1)) == (
        datetime(2026, 10, 26, 5, 0, tzinfo=UTC),  # a Monday, like 5 January, 06:00 CET
        datetime(2026, 11, 2, 5, 0, tzinfo=UTC),
    )
    hourly = first_run(3600, time(0, 15), BERLIN, datetime(2026, 3, 29, 0, 20, tzinfo=UTC))
    assert [hourly.run(n) for n in range(3)] == [  # elapsed hours across the change
        datetime(2026, 3, 29, 1, 15, tzinfo=UTC),
        datetime(2026, 3, 29, 2, 15, tzinfo=UTC),
        datetime(2026, 3, 29, 3, 15, tzinfo=UTC),
    ]


def test_the_scheduler_computes_local_runs_of_a_configured_row() -> None:
    """The row a configured entry makes, run after run on a fake clock through the
    scheduler's own computation (run_time, next_due, read_window)."""
    utility = Utility(code="DEFAULT", name="d", id=1)
    now = datetime(2026, 3, 27, 12, tzinfo=UTC)
    row = schedule_row(daily(window_seconds=93600), utility, ("MTR-1",), now)
    assert (row.state, row.due_at, row.start_at) == (
        "active",
        datetime(2026, 3, 28, 0, 30, tzinfo=UTC),
        datetime(2026, 3, 28, 0, 30, tzinfo=UTC),
    )
    dues = []
    current = row
    for n in range(1, 4):
        following = next_due(current)
        assert following is not None
        dues.append(following)
        current = replace(current, runs=n, due_at=following)
        assert run_time(current) == following
    assert dues == [
        datetime(2026, 3, 29, 0, 30, tzinfo=UTC),
        datetime(2026, 3, 29, 23, 30, tzinfo=UTC),  # 01:30 CEST
        datetime(2026, 3, 30, 23, 30, tzinfo=UTC),
    ]
    start, end = read_window(replace(row, runs=2))
    assert (start, end) == (
        datetime(2026, 3, 29, 23, 30, tzinfo=UTC) - timedelta(seconds=93600),
        datetime(2026, 3, 29, 23, 30, tzinfo=UTC),
    )
    # with an end: the last run is the one not after it; an end already passed: finished
    ending = schedule_row(daily(end="2026-03-29T12:00:00+02:00"), utility, ("MTR-1",), now)
    assert next_due(replace(ending, runs=1)) is None
    over = schedule_row(daily(end="2026-03-20"), utility, ("MTR-1",), now)
    assert over.state == "finished"


# -- the job table on SQLite ------------------------------------------------------------------


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    f = Fleet.build(3, free_port(), seed=21)
    with SimulatorThread(f):
        yield f


def make_app(url: str, fleet: Fleet, *entries: ReadScheduleSettings, migrate: bool = True) -> App:
    settings = hub_settings(url, enabled=True, read_schedules=list(entries))
    return bootstrap(settings, migrate=migrate, meters=MeterDirectory.from_fleet(fleet))


@pytest.fixture
def app(sqlite_url: str, fleet: Fleet) -> Iterator[App]:
    application = make_app(sqlite_url, fleet)
    add_meters(application, *mrids(fleet))
    yield application
    application.close()


def created_updated_removed(app: App, fleet: Fleet) -> None:
    """The whole life of a configured schedule next to a hub one (SQLite and PostgreSQL)."""
    meters = mrids(fleet)
    start = datetime.now(UTC) + timedelta(days=2)
    hub = send(app, meter_read_schedule(meters[:1], start, None, mrid="HUB-LATER"))
    assert hub.result == "OK", hub.errors
    hub_row = rows(app)["HUB-LATER"]

    now = datetime(2026, 11, 25, 12, tzinfo=UTC)
    report = sync(app, [daily()], now)
    assert (report.created, report.cancelled) == (["DAILY-PROFILE"], [])
    row = rows(app)["DAILY-PROFILE"]
    assert (row.state, row.due_at, row.targets) == (
        "active",
        datetime(2026, 11, 26, 0, 30, tzinfo=UTC),  # 01:30 CET
        tuple(sorted(meters)),
    )
    assert row.spec["source"] == "configuration"
    assert row.spec["recurrence"] == {  # DTSTART yesterday 01:30 local; run 0: the next
        "rule": "FREQ=DAILY",
        "start": "2026-11-24T01:30:00",
        "fold": 0,
        "zone": BERLIN,
        "skip": 2,
    }
    assert (row.recurrence_seconds, row.recurrence_pattern, row.message_id) == (
        86400,
        "FREQ=DAILY",
        None,
    )

    # the same file at the next start: nothing written
    again = sync(app, [daily()], now + timedelta(hours=1))
    assert again.unchanged == ["DAILY-PROFILE"]
    assert rows(app)["DAILY-PROFILE"] == row

    # a changed file: the row follows, its next run recomputed from now
    later = now + timedelta(days=3)
    changed = daily(at="02:15", reading_types=[PROFILE_15], all_meters=False, meters=meters[1:])
    report = sync(app, [changed], later)
    assert report.updated == ["DAILY-PROFILE"]
    row = rows(app)["DAILY-PROFILE"]
    assert (
        (row.state, row.runs, row.due_at, row.targets)
        == (
            "active",
            0,
            datetime(2026, 11, 29, 1, 15, tzinfo=UTC),  # 02:15 CET
            tuple(meters[1:]),
        )
    )
    assert (row.spec["types"], row.spec["select"]["meters"]) == ([PROFILE_15], meters[1:])

    # a removed entry is cancelled; the hub's schedule is untouched throughout
    report = sync(app, [], later + timedelta(hours=1))
    assert report.cancelled == ["DAILY-PROFILE"]
    assert rows(app)["DAILY-PROFILE"].state == "cancelled"
    assert rows(app)["HUB-LATER"] == hub_row

    # back in the file: active again
    report = sync(app, [changed], later + timedelta(days=1))
    assert report.updated == ["DAILY-PROFILE"]
    assert rows(app)["DAILY-PROFILE"].state == "active"

    # the hub may not cancel it (the file would bring it back) ...
    cancel = send(app, meter_read_schedule([], verb="cancel", mrid="DAILY-PROFILE"))
    assert cancel.result == "FAILED"
    assert [e.code for e in cancel.errors] == ["2009"]
    assert "defined in the configuration" in cancel.errors[0].reason
    # ... and an entry may not take a hub schedule's name: refused, nothing written
    with pytest.raises(ConfigurationError, match="'HUB-LATER': read schedule HUB-LATER was"):
        sync(app, [changed, daily(name="HUB-LATER"), daily(name="ZZ-NEW")], later)
    assert "ZZ-NEW" not in rows(app)
    assert rows(app)["HUB-LATER"] == hub_row


def test_configured_schedules_created_changed_removed(app: App, fleet: Fleet) -> None:
    created_updated_removed(app, fleet)


def test_the_service_start_writes_them_and_refuses_an_unknown_area(
    sqlite_url: str, fleet: Fleet
) -> None:
    first = make_app(sqlite_url, fleet, daily())
    add_meters(first, *mrids(fleet))
    service = build(first)
    service.start()
    service.stop()
    assert rows(first)["DAILY-PROFILE"].state == "active"
    first.close()

    areas = entry(name="AREA-HOURLY", areas=["TA-17", "TA-99"], period=3600)
    second = make_app(sqlite_url, fleet, areas, migrate=False)
    set_area(second, "TA-17", *mrids(fleet)[:1])
    with pytest.raises(ConfigurationError) as refused:
        build(second).start()
    assert str(refused.value) == (
        "[[hes.read_schedules]] 'AREA-HOURLY': area 'TA-99': no usage point of this "
        "transformer area"
    )
    assert set(rows(second)) == {"DAILY-PROFILE"}  # nothing written, nothing cancelled
    assert rows(second)["DAILY-PROFILE"].state == "active"
    unknown = entry(name="BY-METER", meters=["MTR-NOPE"], period=3600)
    with pytest.raises(ConfigurationError, match="'BY-METER': meter 'MTR-NOPE' is not a meter"):
        sync(second, [unknown], datetime.now(UTC))
    other = entry(name="OTHER", meters=mrids(fleet)[:1], period=3600, utility="NORTH")
    with pytest.raises(ConfigurationError, match="'OTHER': no utility 'NORTH' in the store"):
        sync(second, [other], datetime.now(UTC))
    second.close()


def test_a_configured_schedule_runs_over_tcp_and_follows_its_area(app: App, fleet: Fleet) -> None:
    meters = mrids(fleet)
    set_area(app, "TA-1", *meters[:2])
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    clock = FakeClock(hour - timedelta(minutes=5))
    headend(app).clock = clock
    hourly = entry(
        name="AREA-HOURLY",
        areas=["TA-1"],
        period=3600,
        at="00:00",
        reading_types=[PROFILE_15],
        events=False,
    )
    sync(app, [hourly], clock.now)
    row = job(app, JobKind.READ, "AREA-HOURLY")
    assert (row.due_at, row.targets) == (hour, tuple(meters[:2]))
    assert headend(app).run_due() == []  # not due on the scheduler's clock

    clock.now = hour + timedelta(minutes=1)
    headend(app).run_due()
    row = job(app, JobKind.READ, "AREA-HOURLY")
    assert (row.state, row.runs, row.due_at) == ("active", 1, hour + timedelta(hours=1))
    assert row.last_outcome is not None
    assert "meters=2 readings=8 stored=8" in row.last_outcome  # 4 quarter-hours each

    set_area(app, "TA-1", meters[2])  # a meter joins the area: read at the next run
    clock.now = hour + timedelta(hours=1, minutes=1)
    headend(app).run_due()
    row = job(app, JobKind.READ, "AREA-HOURLY")
    assert row.runs == 2
    assert row.last_outcome is not None
    assert "meters=3 readings=12 stored=12" in row.last_outcome

    uid = utility_id(app)
    with app.uow_factory() as uow:
        found = [uow.devices.find(uid, DeviceRef(mrid=m)) for m in meters]
        ids = [d.id for d in found if d is not None and d.id is not None]
        stored = list(
            uow.readings.query(
                ids, [PROFILE_15], hour - timedelta(hours=1), hour + timedelta(hours=1)
            )
        )
    assert len(stored) == 2 * 8 + 4  # two meters for both runs, the third for the second
    assert max(r.ts for r in stored) == hour + timedelta(hours=1)


def test_events_false_leaves_the_event_log_alone(app: App, fleet: Fleet) -> None:
    meters = mrids(fleet)
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    for meter in fleet.meters[:2]:  # both logs hold a tamper inside the first run's window
        meter.faults.tamper_at = hour - timedelta(minutes=10)
    clock = FakeClock(hour - timedelta(minutes=5))
    headend(app).clock = clock
    sync(
        app,
        [
            entry(name="NO-EVENTS", meters=meters[:1], period=3600, events=False),
            entry(name="WITH-EVENTS", meters=meters[1:2], period=3600),
        ],
        clock.now,
    )
    clock.now = hour + timedelta(minutes=1)
    headend(app).run_due()
    outcomes = {
        n: job(app, JobKind.READ, n).last_outcome or "" for n in ("NO-EVENTS", "WITH-EVENTS")
    }
    assert "events=0" in outcomes["NO-EVENTS"]
    assert "events=1" in outcomes["WITH-EVENTS"]
    assert [e.device_mrid for e in stored_events(app)] == [meters[1]]
