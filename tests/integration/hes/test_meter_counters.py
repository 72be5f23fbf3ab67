"""The head-end's view of the meters' counters kept in the store: reads of simulated meters
over real TCP by engines that share nothing in memory (a restart, another process), on
SQLite and PostgreSQL. A meter whose counter went back is refused with a replay security
event, which the memory-only check of a fresh process would not see."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adapters.dlms import DlmsHeadEnd
from adapters.dlms.counters import StoredMeterCounters
from adapters.sql.engine import make_engine
from adapters.sql.migrate import upgrade
from adapters.sql.uow import SqlUnitOfWorkFactory
from cim_schemas.errors import StoreUnavailable
from hes.cli import fleet_manifest
from hes.client.session import ClientIdentity
from hes.engine import (
    EnginePolicy,
    MeterOutcome,
    MeterResult,
    ReadCommand,
    ReadingEngine,
    RunReport,
)
from hes.security.gcm import InvocationCounter
from hes.simulator.fleet import Fleet, SimulatorThread
from hes.simulator.meter import interval_end, interval_index
from hub.bootstrap import bootstrap
from hub.headend import HeadEndOutbox
from hub.headend_store import MdmReadingSink
from hub.settings import load_settings
from mdm.model import EndDevice, IngestStats, Utility
from mdm.security_counters import CounterChannel
from tests.conftest import free_port
from tests.integration.hes.test_alarms import (
    mrid,
    outbox_settings,
    stored_events,
    targets,
)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlUnitOfWorkFactory]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/amihub.db"
    else:
        url = request.getfixturevalue("postgres_url")
    engine = make_engine(url)
    upgrade(engine)
    try:
        yield SqlUnitOfWorkFactory(engine)
    finally:
        engine.dispose()


@pytest.fixture
def fleet(factory: SqlUnitOfWorkFactory) -> Iterator[Fleet]:
    f = Fleet.build(3, free_port(), seed=11)
    with factory() as uow:
        u = uow.utilities.add(Utility("ACME", "Acme Power"))
        assert u.id is not None
        for i in range(len(f.meters)):
            uow.devices.add(u.id, EndDevice(mrid(f, i), "ACME"))
        uow.commit()
    with SimulatorThread(f):
        yield f


def read(factory: SqlUnitOfWorkFactory, fleet: Fleet, *, stored: bool = True) -> RunReport:
    """One read by a fresh engine (nothing in memory from the earlier ones)."""
    end = interval_end(interval_index(datetime.now(UTC)) - 1)
    counters = StoredMeterCounters(factory) if stored else None
    engine = ReadingEngine(
        MdmReadingSink(factory, "ACME", HeadEndOutbox(outbox_settings())),
        policy=EnginePolicy(concurrency=3, timeout=2.0, attempts=2, backoff_base=0.01),
        identity=ClientIdentity(counter_store=counters),
        sleep=lambda s: None,
    )
    try:
        return engine.run(ReadCommand(targets(fleet), end - timedelta(hours=2), end))
    finally:
        if counters is not None:
            counters.close()  # the process stops: what it recorded is written


def response_counters(factory: SqlUnitOfWorkFactory) -> dict[bytes, int]:
    with factory() as uow:
        return uow.invocation_counters.last(CounterChannel.RESPONSE)


def test_a_meter_whose_counter_went_back_is_refused_after_a_restart(
    factory: SqlUnitOfWorkFactory, fleet: Fleet
) -> None:
    first = read(factory, fleet)
    assert first.count(MeterOutcome.DONE) == 3
    # the highest counter each meter answered with (its last ciphered frame), recorded
    assert response_counters(factory) == {m.system_title: m.counter.value for m in fleet.meters}
    assert not [e for e in stored_events(factory) if e.details.get("kind")]

    again = read(factory, fleet)  # a restarted head-end: counters went forward
    assert again.count(MeterOutcome.DONE) == 3
    recorded = response_counters(factory)
    assert recorded == {m.system_title: m.counter.value for m in fleet.meters}

    meter = fleet.meters[1]  # restored from an old backup: it reuses counters (GCM nonces)
    meter.counter = InvocationCounter(meter.counter.value - 20)
    third = read(factory, fleet)
    failed = {r.mrid: r.error for r in third.results if r.outcome is MeterOutcome.FAILED}
    assert failed == {
        mrid(fleet, 1): (
            f"SecurityViolation: meter invocation counter rewound: "
            f"{recorded[meter.system_title] - 19} of {meter.system_title.hex()} does not go "
            f"forward (last {recorded[meter.system_title]}, in the store)"
        )
    }
    assert third.count(MeterOutcome.DONE) == 2
    (event,) = [e for e in stored_events(factory) if e.details.get("kind")]
    assert (event.device_mrid, event.event_type, event.details["kind"]) == (
        mrid(fleet, 1),
        "3.12.43.257",
        "replay",
    )
    assert event.details["detail"] == failed[mrid(fleet, 1)]
    # the refused association recorded nothing: the stored counter did not go back
    assert response_counters(factory)[meter.system_title] == recorded[meter.system_title]

    # what a process without the store sees: the rewound meter is read without a word
    memory_only = read(factory, fleet, stored=False)
    assert memory_only.count(MeterOutcome.DONE) == 3


def test_the_head_end_of_amihub_serve_checks_the_store(
    factory: SqlUnitOfWorkFactory, fleet: Fleet, tmp_path: Path
) -> None:
    manifest = tmp_path / "fleet.json"
    manifest.write_text(json.dumps(fleet_manifest(fleet)))
    url = factory.engine.url.render_as_string(hide_password=False)
    app = bootstrap(
        load_settings(database_url=url, hes={"manifest": manifest, "simulated_seed": 11}),
        migrate=True,
    )
    try:
        assert isinstance(app.headend, DlmsHeadEnd)
        store = app.headend.identity.counter_store
        assert store is app.headend.counters
        assert isinstance(store, StoredMeterCounters)
        st = fleet.meters[0].system_title
        store.record(st, 40)
        store.record(st, 30)  # never lowered
        assert store.last(st) == 40
        store.flush()  # what its thread does every 2 s
        assert response_counters(factory) == {st: 40}
        other = StoredMeterCounters(factory)  # another process on the store
        try:
            assert other.last(st) == 40  # its first round read the store
            other.record(st, 50)
            other.flush()
        finally:
            other.close()
        store.flush()  # reads the rows changed since its last round
        assert store.last(st) == 50
    finally:
        app.close()


class Collect:
    """The results, kept by the caller (as the hub's on-demand read does)."""

    def __init__(self) -> None:
        self.results: list[MeterResult] = []

    def write(self, results: Sequence[MeterResult]) -> tuple[IngestStats, int]:
        self.results.extend(results)
        return IngestStats(), 0


def test_an_association_never_waits_for_the_store(tmp_path: Path) -> None:
    """An on-demand read runs inside the hub's transaction, which on SQLite holds the
    write lock: the counters are checked and recorded in memory, written afterwards."""
    engine = make_engine(f"sqlite:///{tmp_path}/amihub.db", sqlite_busy_timeout=30)
    upgrade(engine)
    factory = SqlUnitOfWorkFactory(engine)
    fleet = Fleet.build(2, free_port(), seed=11)
    counters = StoredMeterCounters(factory, interval=0.1, load_wait=0.5)
    end = interval_end(interval_index(datetime.now(UTC)) - 1)
    reader = ReadingEngine(
        Collect(),
        policy=EnginePolicy(concurrency=2, timeout=2.0, attempts=1),
        identity=ClientIdentity(counter_store=counters),
    )
    try:
        with SimulatorThread(fleet), factory():  # BEGIN IMMEDIATE: the write lock is held
            started = time.monotonic()
            report = reader.run(ReadCommand(targets(fleet), end - timedelta(hours=1), end))
            assert report.count(MeterOutcome.DONE) == 2
            assert time.monotonic() - started < 10  # the busy timeout is 30 s
            assert not counters.loaded.is_set()  # its thread is still waiting for the lock
        counters.loaded.wait(30)  # the lock released: the recorded counters written
        deadline = time.monotonic() + 30
        wanted = {m.system_title: m.counter.value for m in fleet.meters}
        while response_counters(factory) != wanted:
            assert time.monotonic() < deadline, response_counters(factory)
            time.sleep(0.1)
    finally:
        counters.close()
        engine.dispose()


def test_a_store_that_does_not_answer_keeps_the_recorded_counters(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/amihub.db", sqlite_busy_timeout=0.2)
    upgrade(engine)
    factory = SqlUnitOfWorkFactory(engine)
    counters = StoredMeterCounters(factory, interval=3600)  # rounds by hand below
    st = bytes.fromhex("414d480000000007")
    try:
        with factory():  # another writer holds the lock past the busy timeout
            counters.record(st, 12)
            with pytest.raises(StoreUnavailable, match="database is locked"):
                counters.flush()
            assert counters.last(st) == 12  # answered from memory meanwhile
        counters.flush()  # the next round writes what was kept
        assert response_counters(factory) == {st: 12}
    finally:
        counters.close()
        engine.dispose()
