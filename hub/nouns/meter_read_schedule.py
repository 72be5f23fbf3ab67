"""MeterReadSchedule: an on-demand read of meters through the head-end, stored in the MDM.

``create``: the meters named (``EndDevice``, ``UsagePoint``, ``UsagePointGroup`` =
transformer area, ``EndDeviceGroup`` = the members of that group, resolved as for
EndDeviceControls) are read now: registers (+A, -A, rates), clock, the 15-minute load profile of the
window and the window's events from the meter's event log. Window: the first
``TimeSchedule/scheduleInterval`` (start, end], else the last 24 hours; both ends
are taken down to a quarter-hour and the end to the last complete interval.
``ReadingType`` (optional) keeps only those types.

The read goes through the head-end's dispatch (:class:`hub.headend_jobs.JobDispatch`,
the same as a scheduled read): in this process, or with ``[hes] dispatch = "amqp"``
split into jobs of ``[hes] job_meters`` meters for the ``amihub engine`` processes,
the request waiting for every job's reply (``[hes] job_timeout``). Either way the
readings (``StoreMeterReadings``: new / superseded / unchanged) and the window's
meter events are stored, and published with the request's MessageID, in
transactions of their own, committed before the reply is written.

A meter that answered nothing is reported with 2014 (its error in ``details``);
the others are stored (PARTIAL). More than ``[hes] read_limit`` meters: 2013.

Recurring and future schedules (a first TimeSchedule with ``recurrencePeriod`` /
``recurrencePattern``, or whose ``scheduleInterval/start`` is in the future; timing
rules in :mod:`hub.nouns.read_timing`) are not read now: they are written to the
head-end job table (``uow.hes_jobs``, kind ``read``) in the request's transaction
and answered at once with the schedule's mRID (TimeSchedule/mRID, or one amihub
makes up) and its next run (TimeSchedule/TimePoints/dateTime); the head-end's
scheduler tick runs them when due (hub/headend_scheduler.py). A stored schedule of
an EndDeviceGroup reads the group's members as they are at each run
(:mod:`mdm.group_targets`): a recurring read of a group follows its membership. A schedule mRID
already in the table is refused with 2007. ``cancel``: each TimeSchedule/mRID names
a schedule to cancel (unknown: 2008; finished or cancelled: 2009).

No transaction is open while the meters are read: the pipeline calls the route's
:meth:`MeterReadScheduleRoute.exchange` (check the request, resolve its meters in a
short read-only transaction, read them) before it opens the transaction in which
:meth:`MeterReadScheduleRoute.handle` writes the reply (hub.routing.ExchangingRoute).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from cim_schemas.codes.reading_type import ReadingType
from cim_schemas.errors import ErrorDetail, MessageRejected, PayloadInvalid, by_mrid
from cim_schemas.profiles.meter_read_schedule import MeterReadSchedule, parse_meter_read_schedule
from hub.headend import HeadEnd, MeterRead
from hub.headend_jobs import JobDispatch, ReadOutcome, ReadRun
from hub.nouns.end_device_controls import Targets, resolve_targets
from hub.nouns.read_schedules import StoredSchedule, cancel_schedules, store_schedule
from hub.nouns.read_timing import Timing, is_stored, parse_timing
from hub.routing import MessageFrame, RouteContext, RouteResult
from mdm.ports import UnitOfWork, UnitOfWorkFactory

QUARTER: Final = timedelta(minutes=15)
DEFAULT_WINDOW: Final = timedelta(hours=24)


def _floor(ts: datetime) -> datetime:
    return ts.replace(minute=ts.minute - ts.minute % 15, second=0, microsecond=0)


@dataclass(frozen=True)
class _Request:
    """A create MeterReadSchedule, checked (no IO)."""

    schedule: MeterReadSchedule
    types: frozenset[str] | None
    start: datetime
    end: datetime
    timing: Timing | None  # a stored (future or recurring) schedule


@dataclass(frozen=True)
class _Read:
    """An immediate read, done before the request's transaction: its meters and what
    the head-end's dispatch read and stored."""

    request: _Request
    targets: Targets
    done: ReadOutcome | None  # None: no meter to read


@dataclass
class MeterReadScheduleRoute:
    headend: HeadEnd | None
    read_limit: int = 100
    noun: str = "MeterReadSchedule"
    verbs: frozenset[str] = frozenset({"create", "cancel"})
    streaming: bool = False
    #: where immediate reads run (in this process, or the engines over RabbitMQ); they
    #: store what they read themselves, before the request's transaction
    jobs: JobDispatch | None = None
    #: the store, for resolving the meters of an immediate read before it runs
    uow_factory: UnitOfWorkFactory | None = None

    def _request(self, frame: MessageFrame, ctx: RouteContext) -> _Request | None:
        """The checked request (None: a cancel); raises what the request gets refused with."""
        if self.headend is None or self.jobs is None:
            raise MessageRejected(
                "no head-end is configured: MeterReadSchedule needs [hes] manifest",
                code="1011",
                xpath="/*/Header/Noun",
            )
        if frame.payload is None:
            raise PayloadInvalid(
                f"{frame.header.verb} MeterReadSchedule needs a Payload",
                code="1009",
                xpath=f"/{frame.root_name}/Payload",
            )
        if frame.header.verb == "cancel":
            return None
        base = frame.payload_xpath
        schedule = parse_meter_read_schedule(frame.payload)
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
        return _Request(schedule, frozenset(types) or None, start, end, timing)

    def _targets(
        self, frame: MessageFrame, ctx: RouteContext, uow: UnitOfWork, request: _Request
    ) -> Targets:
        base = frame.payload_xpath
        schedule = request.schedule
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
        if len(targets.devices) > self.read_limit:
            raise PayloadInvalid(
                f"{len(targets.devices)} meters named; one on-demand read takes at most "
                f"{self.read_limit} ([hes] read_limit)",
                xpath=base,
            )
        return targets

    def exchange(self, frame: MessageFrame, ctx: RouteContext) -> _Request | _Read | None:
        """Before the request's transaction (hub.routing.ExchangingRoute): check the
        request and, for an immediate read, resolve its meters (a read-only transaction
        of its own, ended before the meters are talked to) and read them through the
        head-end's dispatch, which stores the results. A cancel or a stored schedule
        only writes: that is left to :meth:`handle`."""
        request = self._request(frame, ctx)
        if request is None or request.timing is not None:
            return request
        assert self.uow_factory is not None
        assert self.jobs is not None
        with self.uow_factory() as uow:
            targets = self._targets(frame, ctx, uow, request)
        if not targets.devices:
            return _Read(request, targets, None)
        done = self.jobs.read(
            ReadRun(
                frame.header.message_id or str(uuid.uuid4()),
                tuple(targets.devices),
                request.start,
                request.end,
                ctx.utility_code,
                request.types,
                events=True,
                correlation_id=frame.header.message_id,
            )
        )
        return _Read(request, targets, done)

    def handle(self, frame: MessageFrame, ctx: RouteContext, uow: UnitOfWork) -> RouteResult:
        if frame.header.verb == "cancel":
            assert frame.payload is not None  # exchange checked it
            return cancel_schedules(
                parse_meter_read_schedule(frame.payload), frame.payload_xpath, ctx, uow
            )
        exchanged = ctx.exchanged
        if isinstance(exchanged, _Read):
            return _read_result(exchanged, frame.payload_xpath)
        if not isinstance(exchanged, _Request) or exchanged.timing is None:
            raise TypeError("MeterReadScheduleRoute.handle runs after its exchange")
        targets = self._targets(frame, ctx, uow, exchanged)
        result = RouteResult(errors=targets.errors)
        if not targets.devices:
            return _no_meter(result, frame.payload_xpath)
        ts = exchanged.schedule.time_schedules[0]
        return store_schedule(
            result,
            uow,
            ctx,
            StoredSchedule(
                (ts.mrid or "").strip() or str(uuid.uuid4()),
                tuple(targets.devices),
                exchanged.types,
                exchanged.timing,
                frame.header.message_id,
                groups=tuple(targets.groups),
                fixed=tuple(targets.fixed),
            ),
            exchanged.schedule,
            f"{frame.payload_xpath}/TimeSchedule[1]/mRID",
        )


def _no_meter(result: RouteResult, base: str) -> RouteResult:
    if not result.errors:
        result.errors.append(
            ErrorDetail("2011", "the MeterReadSchedule names no meter", xpath=base)
        )
    return result


def _read_result(read: _Read, base: str) -> RouteResult:
    result = RouteResult(errors=list(read.targets.errors))
    done = read.done
    if done is None:
        return _no_meter(result, base)
    _failures(result, done.reads)
    result.counts = {
        "meters": done.meters,
        "read": result.applied,
        "readings": done.readings,
        "stored": done.stored,
        "superseded": done.superseded,
        "unchanged": done.unchanged,
        "events": done.events,
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
