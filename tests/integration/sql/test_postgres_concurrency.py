"""Two transactions ingesting the same new readings at once (real PostgreSQL)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import Engine

import adapters.sql.readings as readings_module
from adapters.sql import SqlUnitOfWorkFactory, make_engine, upgrade
from cim_schemas.errors import StoreUnavailable
from mdm.model import DeviceRef, EndDevice, IngestStats, Utility
from mdm.ports import StagedReading, StagingResult
from tests.postgres import lock_waiters
from tests.waiting import wait_until

pytestmark = pytest.mark.postgres

T0 = datetime(2024, 1, 1, tzinfo=UTC)
RT = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
ROWS = [StagedReading(1, RT, T0 + timedelta(minutes=15 * k), Decimal(k), "") for k in range(96)]


@pytest.fixture
def engine(postgres_url: str) -> Iterator[Engine]:
    engine = make_engine(postgres_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture(params=["one-statement", "staged"])
def factory(
    request: pytest.FixtureRequest, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> SqlUnitOfWorkFactory:
    if request.param == "staged":
        monkeypatch.setattr(readings_module, "SMALL_MESSAGE_ROWS", -1)
    return SqlUnitOfWorkFactory(engine)


def _apply(factory: SqlUnitOfWorkFactory, utility_id: int) -> StagingResult:
    with factory() as uow:
        staging = uow.readings.staging()
        staging.add_meter(1, DeviceRef(mrid="M1"))
        staging.add_readings(ROWS)
        result = staging.apply(utility_id)
        uow.commit()
    return result


@pytest.mark.timeout(60)
def test_concurrent_ingest_of_the_same_keys(factory: SqlUnitOfWorkFactory) -> None:
    with factory() as uow:
        utility = uow.utilities.add(Utility("ACME", "Acme"))
        assert utility.id is not None
        uow.devices.add(utility.id, EndDevice("M1", "ACME"))
        uow.commit()
    uid = utility.id

    outcome: list[object] = []
    first = factory()
    with first as uow:
        staging = uow.readings.staging()
        staging.add_meter(1, DeviceRef(mrid="M1"))
        staging.add_readings(ROWS)
        assert staging.apply(uid).stats == IngestStats(stored=96)

        def second() -> None:
            try:
                outcome.append(_apply(factory, uid))
            except StoreUnavailable as error:
                outcome.append(error)

        thread = threading.Thread(target=second)
        thread.start()
        # the race is on only once the second insert waits on our uncommitted keys
        wait_until(lambda: lock_waiters(uow.engine) == 1, 20, "the second insert waiting")
        assert outcome == []
        uow.commit()
    thread.join(timeout=30)
    assert len(outcome) == 1
    # Either the retryable error or a clean merge that saw the committed rows;
    # never a silent overwrite and never a duplicate key.
    if isinstance(outcome[0], StoreUnavailable):
        outcome[:] = [_apply(factory, uid)]  # the retry
    result = outcome[0]
    assert isinstance(result, StagingResult)
    assert result.stats == IngestStats(unchanged=96)
    with factory() as uow:
        assert uow.readings.count() == 96


def test_processes_starting_together_migrate_once(postgres_url: str) -> None:
    from adapters.sql import current_revision, head_revision

    errors: list[BaseException] = []

    def run() -> None:
        try:
            upgrade(postgres_url)
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert current_revision(postgres_url) == head_revision()
