"""End device groups on PostgreSQL: ``amihub groups`` (the SQLite checks again), and a
disconnect job for a group run against simulated meters over TCP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hes.simulator.fleet import Fleet, SimulatorThread
from hes.simulator.meter import ControlState
from hub.bootstrap import App
from hub.samples import end_device_controls, end_device_groups
from tests.conftest import free_port
from tests.unit.hub.test_groups_cli import groups_cli_checks
from tests.unit.hub.test_headend_routes import (
    DISCONNECT,
    fleet_app,
    hub_settings,
    mrids,
    relay,
    send,
)

pytestmark = pytest.mark.postgres


def test_groups_cli_on_postgres(postgres_url: str, tmp_path: Path) -> None:
    groups_cli_checks(postgres_url, tmp_path)


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    f = Fleet.build(3, free_port(), seed=23)
    with SimulatorThread(f):
        yield f


@pytest.fixture
def app(postgres_url: str, fleet: Fleet) -> Iterator[App]:
    application = fleet_app(hub_settings(postgres_url), fleet)
    yield application
    application.close()


def test_a_disconnect_job_for_a_group_on_postgres(app: App, fleet: Fleet) -> None:
    m = mrids(fleet)
    made = send(app, end_device_groups("create", [{"mrid": "ROUND", "devices": m[1:]}]))
    assert made.result == "OK", made.errors
    outcome = send(app, end_device_controls("create", [{"type": DISCONNECT, "groups": ["ROUND"]}]))
    assert outcome.result == "OK", outcome.errors
    assert app.headend is not None
    [report] = app.headend.run_due()
    assert report.state == "succeeded"
    assert [relay(fleet, i) for i in range(3)] == [
        ControlState.CONNECTED,
        ControlState.DISCONNECTED,
        ControlState.DISCONNECTED,
    ]
