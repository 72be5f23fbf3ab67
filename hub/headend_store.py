"""What the head-end read, into the MDM: the application's side of ``hes.engine``.

The head-end (``hes/``) talks to meters and hands back plain results
(:class:`hes.engine.MeterResult`: readings, the meter's events, the failure); it
never sees the store. :class:`MdmReadingSink` is the :class:`hes.engine.ReadingSink`
the application gives it: one transaction per batch of meters, in which

* the readings go to the store as one :class:`mdm.commands.StoreMeterReadings` on
  the bus (the store picks its write path: new / superseded / unchanged);
* the events not stored yet (meter events, security events; stable mRIDs) are stored
  and, with a ``publisher`` (:class:`hub.headend.HeadEndOutbox`), published as
  ``created EndDeviceEvents`` through :class:`hub.forwarding.EventForwarder`, with the
  batch's readings as ``created MeterReadings`` when it stored or superseded any.

A rollback stores and publishes nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Protocol

from cim_schemas.errors import AmihubError
from hes.engine import MeterResult, result_events
from hub.bus import MessageBus
from mdm.commands import MeterItem, ReadingFeedChunk, StoreMeterReadings
from mdm.handlers import HANDLERS, HandlerContext
from mdm.model import DeviceRef, EndDeviceEvent, IngestStats
from mdm.ports import BlockReading, ReadingBlock, StagingResult, UnitOfWork, UnitOfWorkFactory

log = logging.getLogger("amihub.hes")

#: the actor of the head-end's commands (the audit and the handlers' context)
ACTOR = "amihub-hes"


class ResultPublisher(Protocol):
    """Stores events once and publishes them and the readings read, in the caller's
    transaction (:class:`hub.headend.HeadEndOutbox`)."""

    def record_events(
        self,
        uow: UnitOfWork,
        utility_id: int,
        events: Sequence[EndDeviceEvent],
        correlation_id: str | None = None,
    ) -> list[EndDeviceEvent]: ...

    def publish_readings(
        self,
        uow: UnitOfWork,
        meters: Sequence[tuple[str, Sequence[tuple[str, datetime, Decimal, str]]]],
        correlation_id: str | None = None,
    ) -> int: ...


def reading_feed(
    meters: Sequence[tuple[str, Sequence[tuple[str, datetime, Decimal, str]]]],
) -> ReadingFeedChunk:
    """The readings of some meters as one chunk of a :class:`StoreMeterReadings` feed:
    item n is the n-th meter (1-based), one block per meter and ReadingType."""
    blocks: list[ReadingBlock] = []
    items: list[MeterItem] = []
    for item, (mrid, rows) in enumerate(meters, start=1):
        if not rows:
            continue
        items.append(MeterItem(item, DeviceRef(mrid=mrid)))
        by_type: dict[str, list[BlockReading]] = {}
        for reading_type, ts, value, quality in rows:
            by_type.setdefault(reading_type, []).append((ts, value, quality))
        blocks.extend(ReadingBlock(item, rt, values) for rt, values in by_type.items())
    return ReadingFeedChunk(blocks, items)


def results_feed(results: Sequence[MeterResult]) -> ReadingFeedChunk:
    """The readings of a batch of meter results as one feed chunk (item n: the n-th
    result), without an intermediate copy (a batch is up to 500 meters x 100 readings)."""
    blocks: list[ReadingBlock] = []
    items: list[MeterItem] = []
    for item, result in enumerate(results, start=1):
        readings = result.readings
        if not readings:
            continue
        items.append(MeterItem(item, DeviceRef(mrid=result.mrid)))
        by_type: dict[str, list[BlockReading]] = {}
        for x in readings:
            rows = by_type.get(x.reading_type)
            if rows is None:
                rows = by_type[x.reading_type] = []
            rows.append((x.ts, x.value, x.quality))
        blocks.extend(ReadingBlock(item, rt, rows) for rt, rows in by_type.items())
    return ReadingFeedChunk(blocks, items)


def store_readings(
    bus: MessageBus,
    uow: UnitOfWork,
    utility_id: int,
    feed: ReadingFeedChunk,
    what: str,
) -> StagingResult:
    """``StoreMeterReadings`` of one feed chunk in the caller's transaction; a
    duplicate (one key twice in the batch) is a defect of the caller: AmihubError."""
    applied: StagingResult = bus.handle(
        StoreMeterReadings(utility_id, [feed]),
        uow,
        HandlerContext(actor=ACTOR, now=datetime.now(UTC), source="headend"),
    )
    if applied.duplicates:
        raise AmihubError(f"duplicate readings in {what}: {applied.duplicates}")
    return applied


class MdmReadingSink:
    """A :class:`hes.engine.ReadingSink` writing batches to the MDM (module text).
    ``correlation_id``: the MessageID of the request the read answers (its events and
    readings are published with it)."""

    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        utility_code: str,
        publisher: ResultPublisher | None = None,
        *,
        bus: MessageBus | None = None,
        correlation_id: str | None = None,
    ) -> None:
        self.uow_factory = uow_factory
        self.utility_code = utility_code
        self.publisher = publisher
        self.bus = bus or MessageBus(HANDLERS)
        self.correlation_id = correlation_id
        self._utility_id: int | None = None
        self._lock = threading.Lock()

    def _utility(self) -> int:
        if self._utility_id is None:
            with self.uow_factory() as uow:
                utility = uow.utilities.get(self.utility_code)
            if utility is None or utility.id is None:
                raise AmihubError(f"unknown utility {self.utility_code}")
            self._utility_id = utility.id
        return self._utility_id

    def write(self, results: Sequence[MeterResult]) -> tuple[IngestStats, int]:
        utility_id = self._utility()
        with self._lock, self.uow_factory() as uow:
            applied = store_readings(
                self.bus, uow, utility_id, results_feed(results), "a head-end batch"
            )
            events = [e for result in results for e in result_events(result)]
            if self.publisher is None:
                stored_events = len(uow.events.add_new(utility_id, events))
            else:
                stored_events = len(
                    self.publisher.record_events(uow, utility_id, events, self.correlation_id)
                )
                if applied.stats.stored or applied.stats.superseded:
                    unknown = set(applied.unknown_items)
                    self.publisher.publish_readings(
                        uow,
                        [
                            (
                                r.mrid,
                                [(x.reading_type, x.ts, x.value, x.quality) for x in r.readings],
                            )
                            for item, r in enumerate(results, start=1)
                            if r.readings and item not in unknown
                        ],
                        self.correlation_id,
                    )
            uow.commit()
        for item in applied.unknown_items:
            log.warning(
                "meter %s is not in the MDM: its readings were not stored", results[item - 1].mrid
            )
        return applied.stats, stored_events


def _values(result: MeterResult) -> tuple[str, list[tuple[str, datetime, Decimal, str]]]:
    return result.mrid, [(x.reading_type, x.ts, x.value, x.quality) for x in result.readings]
