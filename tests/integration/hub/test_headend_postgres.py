"""CIM EndDeviceControls and MeterReadSchedule against simulated meters, stored in PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from cim_schemas.xml import parse_bytes
from hes.simulator.fleet import Fleet, SimulatorThread
from hes.simulator.meter import ControlState
from hub.bootstrap import App
from hub.samples import end_device_controls, get_end_device_events, meter_read_schedule
from tests.conftest import free_port
from tests.unit.hub.test_headend_routes import (
    CONNECTED,
    DISCONNECT,
    DISCONNECTED,
    EDE,
    RECONNECT,
    events,
    fleet_app,
    hub_settings,
    mrids,
    outbox_bodies,
    send,
    type_of,
)

pytestmark = pytest.mark.postgres


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    f = Fleet.build(3, free_port(), seed=7)
    with SimulatorThread(f):
        yield f


@pytest.fixture
def pg_app(postgres_url: str, fleet: Fleet) -> Iterator[App]:
    app = fleet_app(hub_settings(postgres_url), fleet)
    yield app
    app.close()


def test_controls_events_and_reads_on_postgres(pg_app: App, fleet: Fleet) -> None:
    meters = mrids(fleet)
    fleet.meters[2].control_state = ControlState.DISCONNECTED
    outcome = send(
        pg_app,
        end_device_controls(
            "create",
            [
                {"type": DISCONNECT, "mrid": "PG-D", "devices": meters},
                {"type": "3.15.0.18", "devices": meters[:1]},
                {
                    "type": RECONNECT,
                    "mrid": "PG-LATER",
                    "devices": meters[:1],
                    "start": datetime.now(UTC) + timedelta(hours=1),
                },
            ],
        ),
    )
    assert outcome.result == "PARTIAL"
    assert [e.code for e in outcome.errors] == ["2013"]
    assert pg_app.headend is not None
    [report] = pg_app.headend.run_due()
    assert report.state == "succeeded"
    assert sorted(r.detail for r in report.results) == ["", "", "already"]
    assert all(m.control_state == ControlState.DISCONNECTED for m in fleet.meters)
    assert len(events(pg_app, job="PG-D", state="succeeded")) == 3
    assert len(outbox_bodies(pg_app)) == 1

    cancel = send(pg_app, end_device_controls("cancel", [{"type": RECONNECT, "mrid": "PG-LATER"}]))
    assert cancel.result == "OK", cancel.errors
    assert pg_app.headend.run_due() == []

    back = send(pg_app, end_device_controls("create", [{"type": RECONNECT, "devices": meters[:1]}]))
    assert back.result == "OK"
    pg_app.headend.run_due()
    answer = send(pg_app, get_end_device_events(meters[:1], event_types=[DISCONNECTED, CONNECTED]))
    got = parse_bytes(answer.reply).getroot().findall(f".//{EDE}EndDeviceEvent")
    assert [type_of(e) for e in got] == [DISCONNECTED, CONNECTED]

    end = datetime.now(UTC)
    read = send(pg_app, meter_read_schedule(meters, end - timedelta(hours=1), end))
    assert read.result == "OK", read.errors
    assert read.counts["stored"] == read.counts["readings"] > 3 * 4
