"""The reading engine over real TCP against the simulator, storing into SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import Engine

from adapters.sql.uow import SqlUnitOfWorkFactory
from cim_schemas.codes import event_type
from cim_schemas.codes.reading_type import obis_to_reading_type
from hes.client.session import ClientIdentity, MeterCredentials, Security
from hes.engine import (
    EnginePolicy,
    MeterOutcome,
    MeterTarget,
    ReadCommand,
    ReadingEngine,
)
from hes.readings import QUALITY_TIME_QUESTIONABLE
from hes.simulator.fleet import Fleet, SimulatorThread
from hes.simulator.meter import interval_end, interval_index
from hub.headend_store import MdmReadingSink
from mdm.model import DeviceRef, EndDevice, IngestStats, Utility
from tests.conftest import free_port

DELTA = str(obis_to_reading_type("1.0.1.8.0.255", interval_minutes=15))
EXPORT_DELTA = str(obis_to_reading_type("1.0.2.8.0.255", interval_minutes=15))
PLUS_A = str(obis_to_reading_type("1.0.1.8.0.255"))
T1 = str(obis_to_reading_type("1.0.1.8.1.255"))


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    f = Fleet.build(5, free_port(), seed=5)
    with SimulatorThread(f):
        yield f


@pytest.fixture
def uow_factory(store: Engine, fleet: Fleet) -> SqlUnitOfWorkFactory:
    factory = SqlUnitOfWorkFactory(store)
    with factory() as uow:
        u = uow.utilities.add(Utility("ACME", "Acme Power"))
        assert u.id is not None
        for m in fleet.meters:
            uow.devices.add(u.id, EndDevice(f"MTR-{m.serial}", "ACME", serial_number=m.serial))
        uow.commit()
    return factory


def _targets(fleet: Fleet) -> tuple[MeterTarget, ...]:
    out = []
    for i, m in enumerate(fleet.meters):
        ep = fleet.endpoint(i)
        out.append(
            MeterTarget(
                f"MTR-{m.serial}",
                ep.host,
                ep.port,
                ep.logical_device,
                MeterCredentials(Security.HLS, system_title=m.system_title, keys=m.keys),
            )
        )
    return tuple(out)


def _window(hours: int) -> tuple[datetime, datetime]:
    end = interval_end(interval_index(datetime.now(UTC)) - 1)
    return end - timedelta(hours=hours), end


def _engine(uow_factory: SqlUnitOfWorkFactory, **policy: object) -> ReadingEngine:
    defaults: dict[str, object] = {
        "concurrency": 4,
        "timeout": 1.0,
        "attempts": 2,
        "backoff_base": 0.01,
    }
    defaults.update(policy)
    return ReadingEngine(
        MdmReadingSink(uow_factory, "ACME"),
        policy=EnginePolicy(**defaults),  # type: ignore[arg-type]
        identity=ClientIdentity(),
        sleep=lambda s: None,
    )


def _stored(
    uow_factory: SqlUnitOfWorkFactory, mrid: str, reading_type: str
) -> dict[datetime, Decimal]:
    with uow_factory() as uow:
        utility = uow.utilities.get("ACME")
        assert utility is not None
        assert utility.id is not None
        device = uow.devices.find(utility.id, DeviceRef(mrid=mrid))
        assert device is not None
        assert device.id is not None
        return {r.ts: r.value for r in uow.readings.query([device.id], [reading_type], None, None)}


def test_run_stores_registers_and_interval_deltas(
    fleet: Fleet, uow_factory: SqlUnitOfWorkFactory
) -> None:
    start, end = _window(2)
    report = _engine(uow_factory).run(ReadCommand(_targets(fleet), start, end))
    assert report.count(MeterOutcome.DONE) == 5
    # 4 registers + 8 intervals x (+A, -A) per meter
    assert report.stats == IngestStats(stored=5 * (4 + 16))
    meter = fleet.meters[0]
    deltas = _stored(uow_factory, f"MTR-{meter.serial}", DELTA)
    assert sorted(deltas) == [start + timedelta(minutes=15) * i for i in range(1, 9)]
    for ts, value in deltas.items():
        assert value == Decimal(meter.interval_wh(interval_index(ts))) / 1000
    (plus_a,) = _stored(uow_factory, f"MTR-{meter.serial}", PLUS_A).values()
    assert plus_a >= Decimal(meter.energy_wh(interval_index(end))) / 1000
    (t1,) = _stored(uow_factory, f"MTR-{meter.serial}", T1).values()
    assert t1 > 0
    assert t1 % Decimal("0.01") == 0  # rate registers count 10 Wh: scaler applied
    # a second run of the same window stores no interval twice
    again = _engine(uow_factory).run(ReadCommand(_targets(fleet), start, end))
    assert again.stats.total == 5 * (4 + 16)
    assert again.stats.superseded == 0
    assert again.stats.unchanged >= 5 * 16  # registers are new only if read in a new second


def test_unreachable_meter_is_retried_marked_and_the_run_goes_on(
    fleet: Fleet, uow_factory: SqlUnitOfWorkFactory
) -> None:
    fleet.meters[1].faults.no_answer = True
    start, end = _window(1)
    report = _engine(uow_factory, timeout=0.2).run(ReadCommand(_targets(fleet), start, end))
    failed = [r for r in report.results if r.outcome is MeterOutcome.FAILED]
    assert [r.mrid for r in failed] == [f"MTR-{fleet.meters[1].serial}"]
    assert failed[0].attempts == 2
    assert failed[0].history == [
        MeterOutcome.PENDING,
        MeterOutcome.READING,
        MeterOutcome.WAITING,
        MeterOutcome.READING,
    ]
    assert "no answer" in (failed[0].error or "")
    assert report.count(MeterOutcome.DONE) == 4


def test_refused_association_is_not_retried(
    fleet: Fleet, uow_factory: SqlUnitOfWorkFactory
) -> None:
    targets = list(_targets(fleet))
    bad = targets[2]
    targets[2] = MeterTarget(
        bad.mrid,
        bad.host,
        bad.port,
        bad.logical_device,
        MeterCredentials(Security.LOW, password=b"nope"),
    )
    start, end = _window(1)
    report = _engine(uow_factory).run(ReadCommand(tuple(targets), start, end))
    result = next(r for r in report.results if r.mrid == bad.mrid)
    assert result.outcome is MeterOutcome.FAILED
    assert result.attempts == 1
    assert "AssociationRefused" in (result.error or "")


def test_drop_mid_profile_rereads_only_the_missing_part(
    fleet: Fleet, uow_factory: SqlUnitOfWorkFactory
) -> None:
    meter = fleet.meters[3]
    start, end = _window(24)
    meter.faults.drop_profile_after = start + timedelta(hours=12)
    report = _engine(uow_factory, profile_chunk=timedelta(hours=6)).run(
        ReadCommand(_targets(fleet)[3:4], start, end)
    )
    (result,) = report.results
    assert result.outcome is MeterOutcome.DONE
    assert result.attempts == 2
    assert not result.missing
    served = meter.profile_requests
    first_attempt = [r for r in served if r[0] <= start]
    assert len(first_attempt) == 1  # the first 6-hour chunk (plus the capture before)
    # second attempt: from the chunk that died, never the chunks already read
    assert min(lo for lo, _ in served[2:]) > start
    assert len(_stored(uow_factory, result.mrid, DELTA)) == 96


def test_outage_gap_is_detected_reread_and_reported(
    fleet: Fleet, uow_factory: SqlUnitOfWorkFactory
) -> None:
    meter = fleet.meters[4]
    start, end = _window(3)
    outage = (start + timedelta(minutes=60), start + timedelta(minutes=90))
    meter.faults.outages.append(outage)
    report = _engine(uow_factory).run(
        ReadCommand(_targets(fleet)[4:], start, end, read_events=True)
    )
    (result,) = report.results
    assert result.outcome is MeterOutcome.PARTIAL
    assert result.rereads == 1
    # no capture at 75 and 90 min: no delta for 75, 90 and 105 (needs the 90 capture)
    assert result.missing == [start + timedelta(minutes=m) for m in (75, 90, 105)]
    assert report.events_stored == 2
    with uow_factory() as uow:
        utility = uow.utilities.get("ACME")
        assert utility is not None
        assert utility.id is not None
        codes = [e.event_type for e in uow.events.query(utility.id, None, None, None)]
    assert codes == [str(event_type.POWER_FAILURE), str(event_type.POWER_RESTORED)]


def test_clock_drift_marks_register_quality(
    fleet: Fleet, uow_factory: SqlUnitOfWorkFactory
) -> None:
    fleet.meters[0].faults.clock_drift_s = 600
    start, end = _window(1)
    report = _engine(uow_factory).run(ReadCommand(_targets(fleet)[:1], start, end))
    (result,) = report.results
    assert result.clock_offset is not None
    assert result.clock_offset > timedelta(minutes=9)
    registers = [r for r in result.readings if r.reading_type == PLUS_A]
    assert registers[0].quality == QUALITY_TIME_QUESTIONABLE


def test_meter_configuration_is_cached_between_runs(
    fleet: Fleet, uow_factory: SqlUnitOfWorkFactory
) -> None:
    meter = fleet.meters[0]
    engine = _engine(uow_factory)
    start, end = _window(1)
    engine.run(ReadCommand(_targets(fleet)[:1], start, end))
    first = meter.requests
    engine.run(ReadCommand(_targets(fleet)[:1], start, end))
    # no second read of the scaler_units (+A, -A, T1, T2) and capture objects
    assert meter.requests - first == first - 5


def test_profile_channels_limit_what_is_stored(
    fleet: Fleet, uow_factory: SqlUnitOfWorkFactory
) -> None:
    start, end = _window(1)
    report = _engine(uow_factory).run(
        ReadCommand(
            _targets(fleet)[:2],
            start,
            end,
            registers=("1.0.1.8.0.255",),
            profile_channels=("1.0.1.8.0.255",),
        )
    )
    assert report.stats.stored == 2 * (1 + 4)
    assert {r.reading_type for res in report.results for r in res.readings} == {PLUS_A, DELTA}
