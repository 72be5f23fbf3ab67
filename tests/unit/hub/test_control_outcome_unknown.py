"""A control whose answer fails authentication (issue 12, point 20): the meter opened
the relay, then its answer was tampered on the way. The outcome is unknown until the
head-end reads the disconnector's control_state back in a new association; the store
then follows the meter (disconnected), and the bad tag is kept as a security event.
CIM EndDeviceControls through the hub's pipeline and in-process head-end, simulated
meters over real TCP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hes.simulator.fleet import Fleet, SimulatorThread
from hes.simulator.meter import ControlState
from hub.bootstrap import App
from hub.samples import end_device_controls
from tests.conftest import free_port
from tests.unit.hub.test_headend_routes import (
    DISCONNECT,
    DISCONNECTED,
    events,
    fleet_app,
    hub_settings,
    mrids,
    send,
)

SWITCH_FAILED = "3.31.0.85"


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    f = Fleet.build(3, free_port(), seed=20)
    with SimulatorThread(f):
        yield f


@pytest.fixture
def app(sqlite_url: str, fleet: Fleet) -> Iterator[App]:
    application = fleet_app(hub_settings(sqlite_url), fleet)
    yield application
    application.close()


def run_disconnect(app: App, job: str, devices: list[str]) -> None:
    outcome = send(
        app, end_device_controls("create", [{"type": DISCONNECT, "mrid": job, "devices": devices}])
    )
    assert outcome.result == "OK", outcome.errors
    assert app.headend is not None
    app.headend.run_due()


def test_tampered_answer_then_the_relay_is_read_back(app: App, fleet: Fleet) -> None:
    meters = mrids(fleet)
    fleet.meters[0].faults.tamper_action_answer = True
    run_disconnect(app, "JOB-T1", meters[:2])
    assert fleet.meters[0].control_state == ControlState.DISCONNECTED  # the relay is open
    done = {e.device_mrid: e for e in events(app, job="JOB-T1", control=DISCONNECT)}
    outcome = done[meters[0]]
    assert outcome.event_type == DISCONNECTED  # the store follows the meter
    assert outcome.details["ok"] == "true"
    assert "SecurityViolation" in outcome.details["detail"]
    assert "control_state read back: DISCONNECTED (operated)" in outcome.details["detail"]
    assert done[meters[1]].event_type == DISCONNECTED
    (security,) = events(app, job="JOB-T1", kind="authentication_failed")
    assert security.device_mrid == meters[0]


def test_tampered_answer_and_no_read_back_is_unknown(app: App, fleet: Fleet) -> None:
    meters = mrids(fleet)
    meter = fleet.meters[2]
    meter.faults.tamper_action_answer = True
    meter.faults.silent_after_action = True  # then the meter cannot be reached to read back
    run_disconnect(app, "JOB-T2", [meters[2]])
    assert meter.control_state == ControlState.DISCONNECTED
    (outcome,) = events(app, job="JOB-T2", control=DISCONNECT, state="failed")
    assert outcome.event_type == SWITCH_FAILED
    assert outcome.details["detail"].startswith("outcome unknown: SecurityViolation")
    assert "control_state not read back (MeterUnreachable" in outcome.details["detail"]
    (security,) = events(app, job="JOB-T2", kind="authentication_failed")
    assert security.device_mrid == meters[2]
