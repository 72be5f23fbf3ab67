# mypy: disable-error-code="no-untyped-call"
"""``[hes] dispatch = "amqp"``: the head-end scheduler claims jobs from the job table
and publishes them to ``amihub engine`` processes (RabbitMQ, PostgreSQL, an engine
subprocess, simulated meters over TCP)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adapters.dlms import DlmsHeadEnd, directory_from_settings, headend_from_settings
from adapters.dlms.dispatch import AmqpJobs
from hes.simulator.meter import ControlState
from hub.headend import ControlRequest
from hub.headend_scheduler import floor_quarter
from mdm.hes_jobs import HeadEndJob, JobKind
from tests.integration.hes_engine.test_engine_scale_out import SEED, Setup, make_setup
from tests.unit.hub.test_headend_jobs import job, utility_id
from tests.unit.hub.test_headend_routes import DISCONNECT, events

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]


@pytest.fixture
def fleet4(tmp_path: Path, postgres_url: str, amqp_url: str) -> Iterator[Setup]:
    yield from make_setup(tmp_path, postgres_url, amqp_url, 4)


def amqp_headend(setup: Setup) -> DlmsHeadEnd:
    hes = setup.hes.model_copy(
        update={"dispatch": "amqp", "manifest": setup.manifest, "simulated_seed": SEED}
    )
    assert setup.app.journal is not None
    headend = headend_from_settings(
        hes, setup.app.journal, directory_from_settings(hes), runner=AmqpJobs(hes, setup.amqp)
    )
    assert isinstance(headend, DlmsHeadEnd)
    return headend


def test_the_scheduler_publishes_control_jobs_and_read_schedules_to_the_engines(
    fleet4: Setup,
) -> None:
    fleet4.engine(concurrency=2, prefetch=1)
    headend = amqp_headend(fleet4)
    app = fleet4.app
    uid = utility_id(app)
    assert app.journal is not None
    request = ControlRequest(
        "SCHED-ENG", uid, DISCONNECT, tuple(fleet4.mrids[:2]), datetime.now(UTC)
    )
    with app.uow_factory() as uow:  # what the EndDeviceControls route does
        headend.submit(uow, request)
        app.journal.record_request(uow, request)
        uow.commit()
    start = floor_quarter(datetime.now(UTC)) - timedelta(hours=3)
    with app.uow_factory() as uow:  # what a recurring MeterReadSchedule stores
        uow.hes_jobs.add(
            HeadEndJob(
                utility_id=uid,
                kind=JobKind.READ,
                mrid="SCHED-READ",
                state="active",
                spec={
                    "utility": app.settings.default_utility,
                    "types": None,
                    "window_seconds": 3600,
                },
                targets=tuple(fleet4.mrids[2:4]),
                due_at=start,
                created_at=datetime.now(UTC),
                start_at=start,
                end_at=start + timedelta(minutes=30),
                recurrence_seconds=3600,
            )
        )
        uow.commit()
    try:
        reports = headend.run_due()
    finally:
        headend.close()
    [report] = reports
    assert report.request.job_id == "SCHED-ENG"
    assert report.state == "succeeded"
    assert [m.control_state for m in fleet4.fleet.meters[:3]] == [
        ControlState.DISCONNECTED,
        ControlState.DISCONNECTED,
        ControlState.CONNECTED,
    ]
    control = job(app, JobKind.CONTROL, "SCHED-ENG")
    assert control.state == "succeeded"  # set by the engine, with its outcome records
    assert control.claimed_by is None
    assert len(events(app, job="SCHED-ENG", state="succeeded")) == 2  # recorded once
    assert "control job SCHED-ENG" in fleet4.logs()  # run and recorded by the engine
    assert ": job read-" in fleet4.logs()  # the schedule's read job too

    read = job(app, JobKind.READ, "SCHED-READ")
    assert (read.state, read.runs) == ("finished", 1)  # its only run: start + 1 h > end
    assert read.last_outcome is not None
    assert "meters=2" in read.last_outcome
    assert "stored=0 " not in read.last_outcome  # the engines stored the window
