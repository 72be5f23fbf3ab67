"""An ``amihub engine`` worker follows the key store file: read jobs before and right
after `keys change` succeed without a restart. Simulated HLS meters over TCP, SQLite;
the jobs run through EngineWorker.execute as a delivery would run them (no broker)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from adapters.dlms.directory import MeterDirectory
from adapters.dlms.engine_worker import EngineWorker
from adapters.dlms.headend import directory_from_settings
from adapters.dlms.jobs import read_job
from hes.cli import fleet_manifest
from hes.client.session import ClientIdentity
from hes.engine import EnginePolicy, tcp_sessions
from hes.security.keychange import ChangeKeys, KeyChangeOutcome, KeyChanger, LogKeyAudit
from hes.security.keyfile import KeyStoreFile
from hes.security.keystore import KeyStore
from hes.simulator.fleet import Fleet, SimulatorThread
from hes.simulator.meter import interval_end, interval_index, make_meter
from hub.bootstrap import bootstrap
from hub.settings import Settings, load_settings
from tests.conftest import free_port
from tests.unit.hub.conftest import add_meters

MASTER = bytes(range(32))
SEED = 12


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    f = Fleet([make_meter(i, SEED) for i in range(2)], free_port())
    with SimulatorThread(f):
        yield f


@pytest.fixture
def settings(tmp_path: Path, sqlite_url: str, fleet: Fleet) -> Settings:
    (tmp_path / "fleet.json").write_text(json.dumps(fleet_manifest(fleet)))
    store = KeyStore(MASTER)
    for m in fleet.meters:
        store.put(f"MTR-{m.serial}", m.system_title, m.keys, m.kek)
    KeyStoreFile(tmp_path / "keys.json").save(store)
    s = load_settings(database_url=sqlite_url)
    return s.model_copy(
        update={
            "hes": s.hes.model_copy(
                update={
                    "manifest": tmp_path / "fleet.json",
                    "keystore": tmp_path / "keys.json",
                    "master_key": SecretStr(MASTER.hex()),
                    "concurrency": 2,
                    "timeout": 1.0,
                    "attempts": 1,
                }
            )
        }
    )


def run(worker: EngineWorker, job: str, meters: list[str]) -> dict[str, Any]:
    end = interval_end(interval_index(datetime.now(UTC)) - 1)
    body = json.dumps(read_job(job, meters, end - timedelta(hours=1), end)).encode()
    reply, retry = worker.execute(body, 0)
    assert not retry
    assert reply is not None
    answer: dict[str, Any] = json.loads(reply)
    return answer


def test_an_engine_reads_a_meter_right_after_its_keys_changed(
    settings: Settings, fleet: Fleet
) -> None:
    app = bootstrap(settings, migrate=True)
    meters = [f"MTR-{m.serial}" for m in fleet.meters]
    add_meters(app, *meters, install=False)
    directory = directory_from_settings(settings.hes)
    assert directory is not None
    worker = EngineWorker(settings, app.uow_factory, directory, concurrency=2)
    try:
        assert run(worker, "JOB-1", meters)["state"] == "succeeded"
        # `amihub keys change --meter` on the first meter (the procedure, this process)
        file = KeyStoreFile(settings.hes.keystore or Path())
        store = file.load(MASTER)
        changer = KeyChanger(
            store,
            file.save,
            tcp_sessions(ClientIdentity(b"KEYSCLI1")),
            policy=EnginePolicy(concurrency=1, timeout=1.0, attempts=1),
            audit=LogKeyAudit(),
        )
        targets = MeterDirectory.from_manifest(settings.hes.manifest or Path(), keystore=store)
        [changed] = changer.change(ChangeKeys((targets[meters[0]],), "ops"))
        assert changed.outcome is KeyChangeOutcome.CHANGED
        answer = run(worker, "JOB-2", meters)
        assert answer["state"] == "succeeded", answer
        assert [m["outcome"] for m in answer["meters"]] == ["done", "done"]
        assert directory[meters[0]].credentials.keys == fleet.meters[0].keys
    finally:
        worker.close()
        worker.meters.shutdown()
        worker.jobs.shutdown()
        app.close()
