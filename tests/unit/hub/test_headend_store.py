"""What the head-end read reaches the store through the bus: MdmReadingSink sends one
StoreMeterReadings(utility_id, feed) per batch to the bus it is given, and the store's
handler writes it (new, then unchanged when the same batch comes again)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from cim_schemas.codes.reading_type import obis_to_reading_type
from hes.engine import MeterOutcome, MeterResult
from hes.readings import Reading
from hub.bootstrap import App
from hub.bus import MessageBus
from hub.headend_store import MdmReadingSink
from mdm.commands import StoreMeterReadings
from mdm.handlers import HANDLERS, HandlerContext, store_meter_readings
from mdm.ports import UnitOfWork
from tests.unit.hub.conftest import reading_count

IMPORT = str(obis_to_reading_type("1.0.1.8.0.255"))
EXPORT = str(obis_to_reading_type("1.0.2.8.0.255"))


def result(mrid: str, at: datetime) -> MeterResult:
    return MeterResult(
        mrid,
        MeterOutcome.DONE,
        readings=[
            Reading(IMPORT, at - timedelta(minutes=15), Decimal("1234.25")),
            Reading(IMPORT, at, Decimal("1234.5")),
            Reading(EXPORT, at, Decimal("0.5")),
        ],
    )


def test_a_batch_goes_to_the_store_as_one_store_meter_readings(app: App) -> None:
    sent: list[StoreMeterReadings] = []
    sources: list[str] = []

    def observed(cmd: StoreMeterReadings, uow: UnitOfWork, ctx: HandlerContext) -> Any:
        sent.append(cmd)
        sources.append(ctx.source)
        return store_meter_readings(cmd, uow, ctx)

    bus = MessageBus(HANDLERS)
    bus.register(StoreMeterReadings, observed)
    sink = MdmReadingSink(app.uow_factory, app.settings.default_utility, bus=bus)
    at = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    batch = [result("MTR-1", at), result("MTR-2", at), result("MTR-UNKNOWN", at)]

    stats, events = sink.write(batch)

    assert len(sent) == 1
    assert sources == ["headend"]  # validation on ingest is configured per source
    with app.uow_factory() as uow:
        utility = uow.utilities.get(app.settings.default_utility)
    assert utility is not None
    assert sent[0].utility_id == utility.id
    assert (stats.stored, stats.unchanged, events) == (6, 0, 0)  # the unknown meter: none
    assert reading_count(app) == 6

    stats, _ = sink.write(batch)  # the same batch again: nothing new
    assert (stats.stored, stats.unchanged) == (0, 6)
    assert len(sent) == 2
