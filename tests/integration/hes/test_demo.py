"""hub.headend_demo: a simulated fleet read into SQLite, as ``make demo`` will do."""

from __future__ import annotations

from adapters.sql.engine import make_engine
from adapters.sql.migrate import upgrade
from adapters.sql.uow import SqlUnitOfWorkFactory
from hes.engine import MeterOutcome
from hub.headend_demo import read_simulated_fleet
from mdm.model import Utility


def test_demo_reads_a_fleet_into_the_store(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    upgrade(engine)
    factory = SqlUnitOfWorkFactory(engine)
    with factory() as uow:
        uow.utilities.add(Utility("DEMO", "Demo Power"))
        uow.commit()
    report = read_simulated_fleet(factory, "DEMO", meters=4, hours=2)
    assert report.count(MeterOutcome.DONE) == 4
    assert report.stats.stored == 4 * (4 + 16)
    again = read_simulated_fleet(factory, "DEMO", meters=4, hours=2)  # idempotent setup
    assert again.count(MeterOutcome.DONE) == 4
    with factory() as uow:
        assert len(uow.devices.list(1)) == 4
    engine.dispose()
