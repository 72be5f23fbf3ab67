"""`amihub engine read` in-process (``fleet_read``) over real TCP against simulated meters:

* one meter's malformed or hostile answer fails that meter only: the run goes on, stores
  what the other meters gave and reports the failed meters with their reasons (issue 12,
  points 15 and 17: 1,000 nested arrays in 2 KB, a clock that is no date-time, bytes that
  are no A-XDR);
* the meters' invocation counters are recorded in the store, so a meter whose counter
  went back after an earlier run is refused by the next run (point 19)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adapters.dlms.engine_worker import FleetRead, fleet_read
from hes.cli import fleet_manifest
from hes.security.gcm import InvocationCounter
from hes.simulator.fleet import Fleet, SimulatorThread
from hes.simulator.meter import SecurityPolicy, interval_end, interval_index
from hub.bootstrap import App, bootstrap, open_store
from hub.settings import Settings, load_settings
from mdm.model import DeviceRef
from mdm.security_counters import CounterChannel
from tests.conftest import free_port
from tests.unit.hub.conftest import add_meters

DEEP = b"\x01\x01" * 1000 + b"\x00"  # 1,000 nested arrays of one element: 2 KB


@dataclass
class Setup:
    fleet: Fleet
    settings: Settings
    app: App

    def mrid(self, i: int) -> str:
        return f"MTR-{self.fleet.meters[i].serial}"

    def stored_meters(self) -> set[str]:
        """The meters that have readings in the store."""
        out = set()
        with self.app.uow_factory() as uow:
            for i in range(len(self.fleet.meters)):
                device = uow.devices.find(1, DeviceRef(mrid=self.mrid(i)))
                assert device is not None
                assert device.id is not None
                if next(uow.readings.query([device.id], None, None, None), None) is not None:
                    out.add(self.mrid(i))
        return out

    def read(self) -> FleetRead:
        end = interval_end(interval_index(datetime.now(UTC)) - 1)
        return fleet_read(
            self.settings, end - timedelta(hours=2), end, events=False, store=open_store
        )


@pytest.fixture
def setup(tmp_path: Path, sqlite_url: str) -> Iterator[Setup]:
    fleet = Fleet.build(5, free_port(), seed=17)
    fleet.meters[4].policy = SecurityPolicy.LOW
    manifest = tmp_path / "fleet.json"
    manifest.write_text(json.dumps(fleet_manifest(fleet)))
    settings = load_settings(database_url=sqlite_url)
    settings = settings.model_copy(
        update={
            "hes": settings.hes.model_copy(
                update={
                    "manifest": manifest,
                    "simulated_seed": 17,
                    "concurrency": 3,
                    "attempts": 2,
                    "timeout": 3.0,
                }
            )
        }
    )
    app = bootstrap(settings, migrate=True)
    add_meters(app, *(f"MTR-{m.serial}" for m in fleet.meters), install=False)
    try:
        with SimulatorThread(fleet):
            yield Setup(fleet, settings, app)
    finally:
        app.close()


def test_hostile_answers_fail_their_meter_only(setup: Setup) -> None:
    faults = [m.faults for m in setup.fleet.meters]
    faults[1].answer_get_with = DEEP  # HLS: ciphered under the meter's real keys
    faults[2].answer_get_with = b"\x09\x03abc"  # a clock of 3 bytes
    faults[4].answer_get_with = b"\x7f\xde\xad\xbe\xef"  # LLS: no A-XDR at all
    done = setup.read()
    assert done.outcomes == {"done": 2, "failed": 3}, done.failed
    assert set(done.failed) == {setup.mrid(1), setup.mrid(2), setup.mrid(4)}
    assert "nested deeper than 16 levels" in done.failed[setup.mrid(1)]
    assert "COSEM date-time" in done.failed[setup.mrid(2)]
    assert "unsupported A-XDR tag 0x7f" in done.failed[setup.mrid(4)]
    assert all("internal error" not in reason for reason in done.failed.values())
    assert setup.stored_meters() == {setup.mrid(0), setup.mrid(3)}
    assert done.stats["stored"] > 0


def test_counters_are_recorded_and_a_rewound_meter_is_refused_next_run(setup: Setup) -> None:
    first = setup.read()
    assert first.outcomes == {"done": 5}
    with setup.app.uow_factory() as uow:
        recorded = uow.invocation_counters.last(CounterChannel.RESPONSE)
    hls = [m for m in setup.fleet.meters if m.policy is SecurityPolicy.HLS_GMAC]
    assert recorded == {m.system_title: m.counter.value for m in hls}

    meter = setup.fleet.meters[1]  # restored from an old backup: it reuses its counters
    meter.counter = InvocationCounter(meter.counter.value // 2)
    second = setup.read()  # a new run: nothing shared in memory with the first
    assert second.outcomes == {"done": 4, "failed": 1}
    assert "meter invocation counter rewound" in second.failed[setup.mrid(1)]
