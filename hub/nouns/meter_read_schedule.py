"""MeterReadSchedule: an on-demand read of meters through the head-end, stored in the MDM.

``create``: the meters named (``EndDevice``, ``UsagePoint``, ``UsagePointGroup`` =
transformer area, ``EndDeviceGroup`` = the members of that group, resolved as for
EndDeviceControls) are read now: registers (+A, -A, rates), clock, the 15-minute load profile of the
window and the window's events from the meter's event log. Window: the first
``TimeSchedule/scheduleInterval`` (start, end], else the last 24 hours; both ends
are taken down to a quarter-hour and the end to the last complete interval.
Readings are stored in the request's transaction (ReadingStaging: new /
superseded / unchanged), meter events as EndDeviceEvents. ``ReadingType``
(optional) keeps only those types.

A meter that answered nothing is reported with 2012 (its error in ``details``);
the others are stored (PARTIAL). More than ``[hes] read_limit`` meters: 2013.

With ``[hes] dispatch = "amqp"`` the read is split into jobs of ``[hes] job_meters``
meters for the ``amihub engine`` processes (:class:`EngineReads`); they store the
readings and events themselves (committed before the reply: the counts are theirs)
and the request waits for every job's reply (``[hes] job_timeout``).

Recurring and future schedules (a first TimeSchedule with ``recurrencePeriod`` /
``recurrencePattern``, or whose ``scheduleInterval/start`` is in the future; timing
rules in :mod:`hub.nouns.read_timing`) are not read now: they are written to the
head-end job table (``uow.hes_jobs``, kind ``read``) in the request's transaction
and answered at once with the schedule's mRID (TimeSchedule/mRID, or one amihub
makes up) and its next run (TimeSchedule/TimePoints/dateTime); the head-end's
scheduler tick runs them when due (adapters/dlms/scheduler.py). A stored schedule of
an EndDeviceGroup reads the group's members as they are at each run
(:mod:`mdm.group_targets`): a recurring read of a group follows its membership. A schedule mRID
already in the table is refused with 2007. ``cancel``: each TimeSchedule/mRID names
a schedule to cancel (unknown: 2008; finished or cancelled: 2009).

An immediate read runs inside the request, so the request's transaction stays open
for the read (bounded by ``read_limit`` and the head-end's timeouts).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Final, Protocol

from cim_schemas.codes.reading_type import ReadingType
from cim_schemas.errors import ErrorDetail, MessageRejected, PayloadInvalid, by_mrid
from cim_schemas.profiles.meter_read_schedule import parse_meter_read_schedule
from hub.headend import HeadEnd, HeadEndOutbox, MeterRead
from hub.nouns.end_device_controls import resolve_targets
from hub.nouns.read_schedules import StoredSchedule, cancel_schedules, store_schedule
from hub.nouns.read_timing import Timing, is_stored, parse_timing
from hub.routing import MessageFrame, RouteContext, RouteResult
from hub.settings import Settings
from mdm.model import DeviceRef, EndDeviceEvent
from mdm.ports import StagedReading, UnitOfWork

QUARTER: Final = timedelta(minutes=15)
DEFAULT_WINDOW: Final = timedelta(hours=24)


def _floor(ts: datetime) -> datetime:
    return ts.replace(minute=ts.minute - ts.minute % 15, second=0, microsecond=0)


@dataclass(frozen=True)
class StoredReads:
    """An on-demand read whose results the head-end's engines stored themselves."""

    reads: list[MeterRead]  # outcomes only: readings and events are in the store
    readings: int
    stored: int
    superseded: int
    unchanged: int
    events: int


class EngineReads(Protocol):
    """Reads run by ``amihub engine`` processes (``[hes] dispatch = "amqp"``): they store
    the readings and the window's meter events, and return when every job is committed."""

    def read_stored(
        self,
        devices: Sequence[str],
        start: datetime,
        end: datetime,
        *,
        utility_code: str,
        types: frozenset[str] | None,
    ) -> StoredReads: ...


def engine_reads(settings: Settings) -> EngineReads | None:
    """The engines' reads for ``[hes] dispatch = "amqp"``, else None (in-process reads)."""
    if settings.hes.dispatch != "amqp":
        return None
    from adapters.dlms.dispatch import AmqpEngineReads  # kombu; wired like bootstrap's head-end

    return AmqpEngineReads(settings.hes, settings.amqp)


@dataclass
class MeterReadScheduleRoute:
    headend: HeadEnd | None
    read_limit: int = 100
    noun: str = "MeterReadSchedule"
    verbs: frozenset[str] = frozenset({"create", "cancel"})
    streaming: bool = False
    #: [hes] dispatch = "amqp": reads go to the engines, which store the results
    engines: EngineReads | None = None
    #: in-process reads: new events and the readings published in the request's transaction
    outbox: HeadEndOutbox | None = None

    def handle(self, frame: MessageFrame, ctx: RouteContext, uow: UnitOfWork) -> RouteResult:
        if self.headend is None:
            raise MessageRejected(
                "no head-end is configured: MeterReadSchedule needs [hes] manifest",
                code="1011",
                xpath="/*/Header/Noun",
            )
        base = frame.payload_xpath
        if frame.payload is None:
            raise PayloadInvalid(
                f"{frame.header.verb} MeterReadSchedule needs a Payload",
                code="1009",
                xpath=f"/{frame.root_name}/Payload",
            )
        schedule = parse_meter_read_schedule(frame.payload)
        if frame.header.verb == "cancel":
            return cancel_schedules(schedule, base, ctx, uow)
        errors: list[ErrorDetail] = []
        types: set[str] = set()
        for n, rt in enumerate(schedule.reading_types, 1):
            code = (rt.mrid or rt.name() or "").strip()
            try:
                types.add(str(ReadingType.parse(code)))
            except ValueError as exc:
                errors.append(
                    ErrorDetail(
                        "2003", f"ReadingType {code!r}: {exc}", xpath=f"{base}/ReadingType[{n}]"
                    )
                )
        now = ctx.handler.now
        end = _floor(now)
        start = end - DEFAULT_WINDOW
        timing: Timing | None = None
        for n, ts in enumerate(schedule.time_schedules, 1):
            xpath = f"{base}/TimeSchedule[{n}]"
            interval = ts.schedule_interval
            if is_stored(ts, now):
                parsed = parse_timing(ts, xpath) if n == 1 else None
                if isinstance(parsed, Timing):
                    timing = parsed
                elif parsed is not None:
                    errors.extend(parsed)
                else:
                    errors.append(
                        ErrorDetail(
                            "2013",
                            "one stored read schedule per MeterReadSchedule: only the first "
                            "TimeSchedule may recur or start in the future",
                            xpath=xpath,
                        )
                    )
            elif n == 1 and interval is not None:
                if interval.end is not None:
                    end = min(end, _floor(interval.end))
                start = (
                    _floor(interval.start) if interval.start is not None else end - DEFAULT_WINDOW
                )
                if end <= start:
                    errors.append(
                        ErrorDetail(
                            "2013", "the read window is empty or in the future", xpath=xpath
                        )
                    )
        if errors:
            raise PayloadInvalid(f"create MeterReadSchedule: {errors[0].reason}", errors=errors)
        targets = resolve_targets(
            uow,
            ctx.utility_id,
            base,
            end_devices=schedule.end_devices,
            usage_points=schedule.usage_points,
            usage_point_groups=schedule.usage_point_groups,
            end_device_groups=schedule.end_device_groups,
            tags=("EndDevice", "UsagePoint", "UsagePointGroup", "EndDeviceGroup"),
            headend=self.headend,
        )
        result = RouteResult(errors=targets.errors)
        if len(targets.devices) > self.read_limit:
            raise PayloadInvalid(
                f"{len(targets.devices)} meters named; one on-demand read takes at most "
                f"{self.read_limit} ([hes] read_limit)",
                xpath=base,
            )
        if not targets.devices:
            if not result.errors:
                result.errors.append(
                    ErrorDetail("2011", "the MeterReadSchedule names no meter", xpath=base)
                )
            return result
        if timing is not None:
            ts = schedule.time_schedules[0]
            return store_schedule(
                result,
                uow,
                ctx,
                StoredSchedule(
                    (ts.mrid or "").strip() or str(uuid.uuid4()),
                    tuple(targets.devices),
                    frozenset(types) or None,
                    timing,
                    frame.header.message_id,
                    groups=tuple(targets.groups),
                    fixed=tuple(targets.fixed),
                ),
                schedule,
                f"{base}/TimeSchedule[1]/mRID",
            )
        if self.engines is not None:  # [hes] dispatch = "amqp": the engines store them
            done = self.engines.read_stored(
                targets.devices,
                start,
                end,
                utility_code=ctx.utility_code,
                types=frozenset(types) or None,
            )
            _failures(result, done.reads)
            result.counts = {
                "meters": len(done.reads),
                "read": result.applied,
                "readings": done.readings,
                "stored": done.stored,
                "superseded": done.superseded,
                "unchanged": done.unchanged,
                "events": done.events,
            }
            return result
        reads = self.headend.read(targets.devices, start, end, events=True)
        staging = uow.readings.staging()
        events: list[EndDeviceEvent] = []
        read_rows: dict[int, tuple[str, list[tuple[str, datetime, Decimal, str]]]] = {}
        readings = 0
        for item, read in enumerate(reads, 1):
            kept = [r for r in read.readings if not types or r[0] in types]
            if kept:
                staging.add_meter(item, DeviceRef(mrid=read.device_mrid))
                staging.add_readings([StagedReading(item, *r) for r in kept])
                readings += len(kept)
                read_rows[item] = (read.device_mrid, kept)
            events.extend(
                e
                for e in read.events
                # the meter's log holds more: the window's only; security events all
                if "kind" in e.details or start < e.created_at <= end
            )
        _failures(result, reads)
        applied = staging.apply(ctx.utility_id)
        stats = applied.stats
        if self.outbox is None:
            stored_events = len(uow.events.add_new(ctx.utility_id, events))
        else:  # same transaction: a rolled-back request publishes nothing
            message = frame.header.message_id
            stored_events = len(self.outbox.record_events(uow, ctx.utility_id, events, message))
            if stats.stored or stats.superseded:
                unknown = set(applied.unknown_items)
                self.outbox.publish_readings(
                    uow, [v for i, v in read_rows.items() if i not in unknown], message
                )
        result.counts = {
            "meters": len(reads),
            "read": result.applied,
            "readings": readings,
            "stored": stats.stored,
            "superseded": stats.superseded,
            "unchanged": stats.unchanged,
            "events": stored_events,
        }
        return result


def _failures(result: RouteResult, reads: Sequence[MeterRead]) -> None:
    """2014 for each meter that answered nothing; the others count as applied."""
    for read in reads:
        if read.outcome == "failed":
            result.errors.append(
                ErrorDetail(
                    "2014",
                    f"meter {read.device_mrid} answered nothing",
                    details=read.error,
                    **by_mrid(read.device_mrid, "EndDevice"),
                )
            )
        else:
            result.applied += 1
