"""The embedded default (``[hes] dispatch = "inprocess"``): a fleet read needs no broker."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from adapters.dlms.engine_worker import fleet_read
from hes.cli import fleet_manifest
from hes.simulator.fleet import Fleet, SimulatorThread
from hes.simulator.meter import interval_end, interval_index
from hub.bootstrap import bootstrap, open_store
from hub.settings import load_settings
from tests.conftest import free_port
from tests.unit.hub.conftest import add_meters


def test_fleet_read_in_process(tmp_path: Path, sqlite_url: str) -> None:
    fleet = Fleet.build(4, free_port(), seed=3)
    manifest = tmp_path / "fleet.json"
    manifest.write_text(json.dumps(fleet_manifest(fleet)))
    settings = load_settings(database_url=sqlite_url)
    settings = settings.model_copy(
        update={
            "amqp": settings.amqp.model_copy(update={"url": "amqp://nobody@127.0.0.1:1//"}),
            "hes": settings.hes.model_copy(
                update={"manifest": manifest, "simulated_seed": 3, "concurrency": 2}
            ),
        }
    )
    assert settings.hes.dispatch == "inprocess"
    app = bootstrap(settings, migrate=True)
    try:
        add_meters(app, *(f"MTR-{m.serial}" for m in fleet.meters), install=False)
        end = interval_end(interval_index(datetime.now(UTC)) - 1)
        with SimulatorThread(fleet):
            done = fleet_read(settings, end - timedelta(hours=1), end, store=open_store)
        assert done.jobs == 0
        assert done.outcomes == {"done": 4}
        assert done.stats["stored"] > 4 * 4
    finally:
        app.close()
