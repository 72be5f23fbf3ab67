"""`amihub keys change` / `keys settle` over a small simulated fleet (real TCP), audited
in the store; keys never shown."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from adapters.sql.engine import make_engine
from adapters.sql.uow import SqlUnitOfWorkFactory
from hes.cli import fleet_manifest
from hes.security.keystore import KeyStore
from hes.simulator.fleet import Fleet, SimulatorThread
from hes.simulator.meter import SecurityPolicy, make_meter
from hub.cli import cli
from mdm.security_counters import CounterChannel
from tests.conftest import free_port

MASTER = bytes(range(32))
SEED = 4


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    meters = [make_meter(i, SEED) for i in range(3)]
    meters.append(make_meter(3, SEED, SecurityPolicy.LOW))
    f = Fleet(meters, free_port())
    with SimulatorThread(f):
        yield f


@pytest.fixture
def env(fleet: Fleet, tmp_path: Path) -> dict[str, str]:
    (tmp_path / "manifest.json").write_text(json.dumps(fleet_manifest(fleet)))
    store = KeyStore(MASTER)
    for m in fleet.meters[:3]:
        store.put(f"MTR-{m.serial}", m.system_title, m.keys, m.kek)
    (tmp_path / "keys.json").write_text(store.dumps())
    return {
        "COLUMNS": "200",
        "AMIHUB_CONFIG": "",  # empty: no settings file
        "AMIHUB_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}",
        "AMIHUB_HES__MANIFEST": str(tmp_path / "manifest.json"),
        "AMIHUB_HES__KEYSTORE": str(tmp_path / "keys.json"),
        "AMIHUB_HES__MASTER_KEY": MASTER.hex(),
        "AMIHUB_HES__SIMULATED_SEED": str(SEED),  # the LLS meter's password
        "AMIHUB_HES__TIMEOUT": "0.5",
        "AMIHUB_HES__ATTEMPTS": "1",
    }


def run(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = CliRunner(env=env).invoke(cli, list(args))
    return result.exit_code, result.output


def _secrets(fleet: Fleet) -> list[str]:
    out = []
    for m in fleet.meters:
        out += [m.keys.encryption_key.hex(), m.keys.authentication_key.hex(), m.kek.hex()]
    return out


def test_change_all_meters_audited_in_the_store(
    fleet: Fleet, env: dict[str, str], tmp_path: Path
) -> None:
    old = [m.keys for m in fleet.meters]
    secrets_before = _secrets(fleet)
    code, output = run(env, "keys", "change", "--all", "--audit", "store")
    assert code == 2
    assert "the audit log in the store is not usable" in output
    assert "amihub db upgrade" in output
    assert [m.key_changes for m in fleet.meters] == [0, 0, 0, 0]  # refused before any change
    assert run(env, "db", "upgrade")[0] == 0
    code, output = run(env, "keys", "change", "--all", "--concurrency", "2", "--actor", "ops")
    assert code == 0, output
    assert "key change: 3 meter(s): 3 changed, 0 failed, 0 unknown" in output
    assert "1 LLS meter(s) left out" in output
    assert [m.key_changes for m in fleet.meters] == [1, 1, 1, 0]
    assert [m.keys != k for m, k in zip(fleet.meters, old, strict=True)] == [
        True,
        True,
        True,
        False,
    ]
    stored = KeyStore.loads((tmp_path / "keys.json").read_text(), MASTER)
    for m in fleet.meters[:3]:
        entry = stored.entry(f"MTR-{m.serial}")
        assert entry is not None
        assert (entry.keys, entry.kek, entry.version) == (m.keys, m.kek, 2)
    engine = make_engine(env["AMIHUB_DATABASE_URL"])
    with SqlUnitOfWorkFactory(engine)() as uow:
        audit = [e for e in uow.audit.list(20) if e[2] == "key-change"]
        # the meters' counters of these associations are recorded in the store too
        counters = uow.invocation_counters.last(CounterChannel.RESPONSE)
    engine.dispose()
    assert counters == {m.system_title: m.counter.value for m in fleet.meters[:3]}
    assert sorted((actor, obj_type, obj) for _, actor, _, obj_type, obj, _ in audit) == [
        ("ops", "EndDevice", f"MTR-{m.serial}") for m in fleet.meters[:3]
    ]
    assert all(
        details == "changed: new keys verified by a new association (active key version 2)"
        for *_, details in audit
    )
    code, listing = run(env, "keys", "list")
    assert code == 0
    assert listing.count("yes") == 3
    shown = output + listing + repr(audit) + (tmp_path / "keys.json").read_text()
    for secret in secrets_before + _secrets(fleet):
        assert secret not in shown


def test_lls_or_unknown_meter_named(fleet: Fleet, env: dict[str, str]) -> None:
    lls = fleet.meters[3].serial
    code, output = run(env, "keys", "change", "--meter", lls, "--audit", "log")
    assert code == 1
    assert f"MTR-{lls}" in output
    assert "uses low authentication: it has no security setup" in output
    assert "0 changed, 1 failed" in output
    code, output = run(env, "keys", "change", "--meter", "NOPE", "--audit", "log")
    assert code == 2
    assert "meter NOPE is not in [hes] manifest" in output
    assert "Traceback" not in output
    code, output = run(env, "keys", "change", "--audit", "log")
    assert code == 2
    assert "--meter SERIAL, or give --all" in output


def test_unknown_outcome_then_settle(fleet: Fleet, env: dict[str, str], tmp_path: Path) -> None:
    meter = fleet.meters[0]
    meter.faults.silent_after_key_transfer = True
    code, output = run(env, "keys", "change", "--meter", meter.serial, "--audit", "log")
    assert code == 1
    assert "unknown" in output
    assert "keys settle" in output
    code, listing = run(env, "keys", "list")
    assert "version 2" in listing  # the pending change
    meter.faults.no_answer = False
    code, output = run(env, "keys", "settle", "--all", "--audit", "log")
    assert code == 0, output
    assert "key settlement: 1 meter(s): 1 changed" in output
    stored = KeyStore.loads((tmp_path / "keys.json").read_text(), MASTER)
    entry = stored.entry(f"MTR-{meter.serial}")
    assert entry is not None
    assert (entry.keys, entry.version) == (meter.keys, 2)
    assert stored.pending_meters() == []
