"""Control jobs over real TCP against the simulator."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from cim_schemas.codes import event_type
from cim_schemas.errors import ConfigurationError
from hes.client.session import ClientIdentity, MeterCredentials, Security
from hes.controls import (
    CLOCK_SET,
    REMOTE_DISCONNECT,
    REMOTE_RECONNECT,
    ControlCommand,
    ControlJobs,
    InvalidJobTransition,
    JobState,
)
from hes.engine import EnginePolicy, MeterTarget, tcp_sessions
from hes.simulator.fleet import Fleet, SimulatorThread
from hes.simulator.meter import ControlState, EventCode
from tests.conftest import free_port


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    f = Fleet.build(3, free_port(), seed=4)
    with SimulatorThread(f):
        yield f


def _targets(fleet: Fleet) -> tuple[MeterTarget, ...]:
    return tuple(
        MeterTarget(
            f"MTR-{m.serial}",
            *fleet.endpoint(i).__dict__.values(),
            MeterCredentials(Security.HLS, system_title=m.system_title, keys=m.keys),
        )
        for i, m in enumerate(fleet.meters)
    )


def _jobs(now: datetime | None = None) -> ControlJobs:
    return ControlJobs(
        tcp_sessions(ClientIdentity()),
        EnginePolicy(concurrency=3, timeout=0.5),
        now=(lambda: now) if now else (lambda: datetime.now(UTC)),
    )


def test_disconnect_then_reconnect_a_group(fleet: Fleet) -> None:
    fleet.meters[1].control_state = ControlState.DISCONNECTED  # already disconnected
    jobs = _jobs()
    job = jobs.submit(ControlCommand(REMOTE_DISCONNECT, _targets(fleet)))
    assert jobs.run_due() == [job]
    assert job.state is JobState.SUCCEEDED
    assert [h[0] for h in job.history] == [JobState.SCHEDULED, JobState.RUNNING]
    assert {o.event_type for o in job.outcomes} == {str(event_type.REMOTE_DISCONNECTED)}
    assert [o.detail for o in job.outcomes] == ["", "already", ""]
    assert all(m.control_state == ControlState.DISCONNECTED for m in fleet.meters)
    # the already-disconnected meter did not operate its relay
    assert [c for _, c in fleet.meters[1].events] == []
    back = jobs.submit(ControlCommand(REMOTE_RECONNECT, _targets(fleet)[:1]))
    jobs.run_due()
    assert back.state is JobState.SUCCEEDED
    assert fleet.meters[0].control_state == ControlState.CONNECTED
    assert [c for _, c in fleet.meters[0].events] == [
        EventCode.DISCONNECTED_REMOTE,
        EventCode.CONNECTED_REMOTE,
    ]


def test_scheduled_job_waits_and_can_be_cancelled(fleet: Fleet) -> None:
    now = datetime.now(UTC)
    jobs = _jobs(now)
    later = jobs.submit(
        ControlCommand(REMOTE_DISCONNECT, _targets(fleet), start=now + timedelta(hours=1))
    )
    assert jobs.run_due() == []
    jobs.cancel(later.id)
    assert later.state is JobState.CANCELLED
    with pytest.raises(InvalidJobTransition):
        jobs.cancel(later.id)
    assert all(m.control_state == ControlState.CONNECTED for m in fleet.meters)


def test_unreachable_meter_makes_the_job_partial(fleet: Fleet) -> None:
    fleet.meters[2].faults.no_answer = True
    jobs = _jobs()
    job = jobs.submit(ControlCommand(REMOTE_DISCONNECT, _targets(fleet)))
    jobs.run_due()
    assert job.state is JobState.PARTIAL
    failed = [o for o in job.outcomes if not o.ok]
    assert [o.mrid for o in failed] == [f"MTR-{fleet.meters[2].serial}"]
    assert failed[0].event_type == str(event_type.SWITCH_OPERATION_FAILED)
    with pytest.raises(InvalidJobTransition):
        jobs.cancel(job.id)  # a finished job cannot be cancelled


def test_clock_synchronisation(fleet: Fleet) -> None:
    fleet.meters[0].faults.clock_drift_s = 900
    jobs = _jobs()
    job = jobs.submit(ControlCommand(CLOCK_SET, _targets(fleet)[:1]))
    jobs.run_due()
    assert job.state is JobState.SUCCEEDED
    assert abs(fleet.meters[0].faults.clock_drift_s) < 5
    assert [c for _, c in fleet.meters[0].events] == [
        EventCode.CLOCK_ADJUSTED_OLD,
        EventCode.CLOCK_ADJUSTED_NEW,
    ]


def test_unsupported_control_type() -> None:
    with pytest.raises(ConfigurationError):
        ControlCommand("3.15.0.18", ())
