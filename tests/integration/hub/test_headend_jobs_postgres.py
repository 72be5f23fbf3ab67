"""The head-end job table on PostgreSQL: several schedulers on one store, leases, row
locks (FOR UPDATE SKIP LOCKED), transactions that roll back; simulated meters over TCP."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from hes.simulator.fleet import Fleet, SimulatorThread
from hes.simulator.meter import ControlState
from hub.bootstrap import App
from hub.headend import ControlReport, ControlRequest
from hub.headend_scheduler import floor_quarter
from hub.samples import end_device_controls, meter_read_schedule
from mdm.hes_jobs import JobKind
from tests.conftest import free_port
from tests.unit.hub.test_headend_jobs import FakeClock, headend, job, utility_id
from tests.unit.hub.test_headend_routes import (
    CLOCK_SET,
    DISCONNECT,
    events,
    mrids,
    relay,
    send,
)

pytestmark = pytest.mark.postgres


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    f = Fleet.build(4, free_port(), seed=12)
    with SimulatorThread(f):
        yield f


def test_two_schedulers_on_one_store_run_each_job_once(two: tuple[App, App], fleet: Fleet) -> None:
    first = two[0]
    meters = mrids(fleet)
    jobs = [f"PAR-{n}" for n in range(8)]
    outcome = send(
        first,
        end_device_controls(
            "create",
            [
                {"type": CLOCK_SET, "mrid": j, "devices": [meters[n % 4]]}
                for n, j in enumerate(jobs)
            ],
        ),
    )
    assert outcome.result == "OK", outcome.errors
    for app in two:
        headend(app).scheduler.claim_limit = 1  # interleave: one job per claim
    reports: dict[str, list[ControlReport]] = {"first": [], "second": []}
    start = threading.Barrier(2)

    def scheduler(name: str, app: App) -> None:
        start.wait()
        for _ in range(20):
            reports[name].extend(headend(app).run_due())

    threads = [
        threading.Thread(target=scheduler, args=item) for item in zip(reports, two, strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    ran = [r.request.job_id for rs in reports.values() for r in rs]
    assert sorted(ran) == sorted(jobs)  # every job once, by one scheduler or the other
    assert reports["first"]
    assert reports["second"]  # both took a share
    for j in jobs:
        row = job(first, JobKind.CONTROL, j)
        assert (row.state, row.runs, row.attempts) == ("succeeded", 1, 0)
        assert len(events(first, job=j, state="succeeded")) == 1  # one outcome record


def test_an_expired_lease_is_taken_over_on_postgres(two: tuple[App, App], fleet: Fleet) -> None:
    first, second = two
    created = send(
        first,
        end_device_controls(
            "create", [{"type": DISCONNECT, "mrid": "PG-LEASE", "devices": mrids(fleet)[:1]}]
        ),
    )
    assert created.result == "OK", created.errors
    crashed = headend(first).scheduler
    [claimed] = crashed.claim()  # the first process dies holding the job
    assert claimed.claimed_by == crashed.owner
    assert headend(second).run_due() == []  # leased
    headend(second).clock = FakeClock(
        datetime.now(UTC) + timedelta(seconds=crashed.lease_seconds + 1)
    )
    [report] = headend(second).run_due()
    assert report.state == "succeeded"
    assert relay(fleet, 0) == ControlState.DISCONNECTED
    row = job(first, JobKind.CONTROL, "PG-LEASE")
    assert (row.state, row.claimed_by, row.lease_until) == ("succeeded", None, None)
    assert first.journal is not None
    assert first.journal.record_report(report, owner=crashed.owner) == []  # lease lost
    assert len(events(first, job="PG-LEASE", state="succeeded")) == 1


def test_a_cancel_in_flight_locks_the_row_and_its_rollback_cancels_nothing(
    two: tuple[App, App], fleet: Fleet
) -> None:
    first, second = two
    created = send(
        first,
        end_device_controls(
            "create", [{"type": DISCONNECT, "mrid": "PG-CANCEL", "devices": mrids(fleet)[1:2]}]
        ),
    )
    assert created.result == "OK", created.errors
    uid = utility_id(first)
    with first.uow_factory() as uow:
        headend(first).cancel(uow, uid, "PG-CANCEL")  # the cancel's transaction is open
        assert headend(second).run_due() == []  # the due row is locked: skipped, not waited on
        uow.rollback()  # ... and the cancel fails
    assert job(first, JobKind.CONTROL, "PG-CANCEL").state == "scheduled"
    [report] = headend(second).run_due()
    assert report.request.job_id == "PG-CANCEL"
    assert relay(fleet, 1) == ControlState.DISCONNECTED
    # a cancel that commits: the job never runs
    later = datetime.now(UTC) + timedelta(hours=1)
    send(
        first,
        end_device_controls(
            "create",
            [{"type": DISCONNECT, "mrid": "PG-GONE", "devices": mrids(fleet)[2:3], "start": later}],
        ),
    )
    cancel = send(first, end_device_controls("cancel", [{"type": DISCONNECT, "mrid": "PG-GONE"}]))
    assert cancel.result == "OK", cancel.errors
    headend(second).clock = FakeClock(later + timedelta(minutes=1))
    assert headend(second).run_due() == []
    assert relay(fleet, 2) == ControlState.CONNECTED


def test_a_rolled_back_request_never_runs_and_its_mrid_stays_free(
    two: tuple[App, App], fleet: Fleet
) -> None:
    first, second = two
    uid = utility_id(first)
    with first.uow_factory() as uow:
        headend(first).submit(
            uow,
            ControlRequest("PG-RB", uid, DISCONNECT, tuple(mrids(fleet)[3:]), datetime.now(UTC)),
        )
        uow.rollback()
    assert headend(second).run_due() == []
    assert headend(first).run_due() == []
    assert relay(fleet, 3) == ControlState.CONNECTED
    assert headend(first).state(uid, "PG-RB") is None
    # a finished job's mRID is refused with 2007; the message's other control still goes
    done = send(
        first,
        end_device_controls(
            "create", [{"type": CLOCK_SET, "mrid": "PG-DONE", "devices": mrids(fleet)[:1]}]
        ),
    )
    assert done.result == "OK"
    [report] = headend(second).run_due()
    assert report.request.job_id == "PG-DONE"
    again = send(
        first,
        end_device_controls(
            "create",
            [
                {"type": CLOCK_SET, "mrid": "PG-DONE", "devices": mrids(fleet)[:1]},
                {"type": CLOCK_SET, "mrid": "PG-NEW", "devices": mrids(fleet)[:1]},
            ],
        ),
    )
    assert again.result == "PARTIAL"  # the savepoint kept the transaction usable
    assert [(e.code, e.xpath) for e in again.errors] == [
        ("2007", "/RequestMessage/Payload/EndDeviceControls/EndDeviceControl[1]/mRID")
    ]
    assert job(first, JobKind.CONTROL, "PG-NEW").state == "scheduled"


def test_a_recurring_schedule_on_postgres_runs_once_per_period_across_schedulers(
    two: tuple[App, App], fleet: Fleet
) -> None:
    first, second = two
    start = floor_quarter(datetime.now(UTC)) - timedelta(hours=6)
    created = send(
        first,
        meter_read_schedule(
            mrids(fleet)[:2],
            start,
            start + timedelta(hours=2),
            mrid="PG-HOURLY",
            recurrence_pattern="FREQ=HOURLY",
        ),
    )
    assert created.result == "OK", created.errors
    clocks = [FakeClock(start + timedelta(minutes=1)) for _ in two]
    for app, clock in zip(two, clocks, strict=True):
        headend(app).clock = clock
    runs = []
    for step in range(4):  # start, +1 h, +2 h (the end: still a run), +3 h (over)
        for clock in clocks:
            clock.now = start + timedelta(hours=step, minutes=1)
        threads = [threading.Thread(target=headend(app).run_due) for app in two]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        runs.append(job(first, JobKind.READ, "PG-HOURLY").runs)
    assert runs == [1, 2, 3, 3]
    row = job(first, JobKind.READ, "PG-HOURLY")
    assert row.state == "finished"
    assert row.recurrence_seconds == 3600
    assert row.last_outcome is not None
    assert "meters=2" in row.last_outcome

    # cancel a schedule while it is active: no further run
    other = send(
        first,
        meter_read_schedule(
            mrids(fleet)[2:], start, None, mrid="PG-DAILY", recurrence_period=86400
        ),
    )
    assert other.result == "OK", other.errors
    assert send(first, meter_read_schedule([], verb="cancel", mrid="PG-DAILY")).result == "OK"
    for clock in clocks:
        clock.now = start + timedelta(days=3)
    headend(second).run_due()
    assert job(first, JobKind.READ, "PG-DAILY").runs == 0
