"""Stored MeterReadSchedules: written to the head-end job table, cancelled there.

:func:`store_schedule` writes one read schedule (kind ``read``) in the request's
transaction and answers with the schedule's mRID and next run;
:func:`cancel_schedules` cancels the schedules a ``cancel MeterReadSchedule`` names by
TimeSchedule/mRID, in the cancel's transaction (not those of ``[[hes.read_schedules]]``:
2009, the configuration owns them). The scheduler
(hub/headend_scheduler.py) runs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from cim_schemas.errors import AmihubError, ErrorDetail, by_mrid
from cim_schemas.profiles.common import DateTimeInterval, IdentifiedObject
from cim_schemas.profiles.meter_read_schedule import (
    MeterReadSchedule,
    TimePoint,
    TimeSchedule,
    render_meter_read_schedule,
)
from hub.nouns.read_timing import Timing
from hub.routing import RouteContext, RouteResult
from mdm.hes_jobs import ACTIVE, CANCELLABLE, CONFIGURED, HeadEndJob, JobKind
from mdm.ports import UnitOfWork


@dataclass(frozen=True)
class StoredSchedule:
    mrid: str
    devices: tuple[str, ...]
    types: frozenset[str] | None
    timing: Timing
    message_id: str | None
    #: EndDeviceGroups (mRIDs): their members are read as they are at each run
    groups: tuple[str, ...] = ()
    #: the meters named other than through a group (read at every run)
    fixed: tuple[str, ...] = ()


def _echo(
    mrid: str,
    devices: tuple[str, ...],
    timing: Timing,
    types: tuple[IdentifiedObject, ...],
    groups: tuple[str, ...] = (),
) -> MeterReadSchedule:
    """The reply: the schedule's mRID, timing and next run (TimePoints[1]/dateTime)."""
    ts = TimeSchedule(
        mrid=mrid,
        recurrence_pattern=timing.pattern,
        recurrence_period=None if timing.period is None else Decimal(timing.period),
        schedule_interval=DateTimeInterval(timing.start, timing.end),
        time_points=(TimePoint(timing.first_run or timing.start, 1),),
    )
    return MeterReadSchedule(
        end_devices=tuple(IdentifiedObject(d) for d in devices),
        end_device_groups=tuple(IdentifiedObject(g) for g in groups),
        reading_types=types,
        time_schedules=(ts,),
    )


def store_schedule(
    result: RouteResult,
    uow: UnitOfWork,
    ctx: RouteContext,
    schedule: StoredSchedule,
    request: MeterReadSchedule,
    mrid_xpath: str,
) -> RouteResult:
    """Write the schedule (2007 if its mRID is taken); the reply names its next run."""
    timing = schedule.timing
    first = timing.first_run or timing.start
    runs = timing.recurrence
    try:
        uow.hes_jobs.add(
            HeadEndJob(
                utility_id=ctx.utility_id,
                kind=JobKind.READ,
                mrid=schedule.mrid,
                state=ACTIVE,
                spec={
                    "utility": ctx.utility_code,
                    "types": sorted(schedule.types) if schedule.types else None,
                    "window_seconds": timing.window_seconds,
                    **({"recurrence": runs.to_json()} if runs is not None else {}),
                    **(
                        {"groups": list(schedule.groups), "fixed": list(schedule.fixed)}
                        if schedule.groups
                        else {}
                    ),
                },
                targets=schedule.devices,
                due_at=first,
                created_at=ctx.handler.now,
                message_id=schedule.message_id,
                start_at=timing.start,
                end_at=timing.end,
                recurrence_seconds=timing.period,
                recurrence_pattern=timing.pattern,
            )
        )
    except AmihubError as exc:
        result.errors.append(
            ErrorDetail(
                "2007", str(exc), xpath=mrid_xpath, **by_mrid(schedule.mrid, "MeterReadSchedule")
            )
        )
        return result
    result.applied += 1
    result.payload = render_meter_read_schedule(
        _echo(schedule.mrid, schedule.devices, timing, request.reading_types, schedule.groups)
    )
    result.counts = {"meters": len(schedule.devices), "scheduled": 1}
    if schedule.groups:
        result.counts["groups"] = len(schedule.groups)
    return result


def cancel_schedules(
    request: MeterReadSchedule, base: str, ctx: RouteContext, uow: UnitOfWork
) -> RouteResult:
    result = RouteResult()
    cancelled: list[TimeSchedule] = []
    if not request.time_schedules:
        result.errors.append(
            ErrorDetail(
                "2011", "cancel MeterReadSchedule names schedules by TimeSchedule/mRID", xpath=base
            )
        )
    for n, ts in enumerate(request.time_schedules, 1):
        xpath = f"{base}/TimeSchedule[{n}]/mRID"
        mrid = (ts.mrid or "").strip()
        if not mrid:
            result.errors.append(
                ErrorDetail("2011", "cancel names the read schedule by its mRID", xpath=xpath)
            )
            continue
        job = uow.hes_jobs.get(ctx.utility_id, JobKind.READ, mrid)
        if job is None or job.id is None:
            result.errors.append(
                ErrorDetail(
                    "2008",
                    f"no read schedule {mrid}",
                    xpath=xpath,
                    **by_mrid(mrid, "MeterReadSchedule"),
                )
            )
            continue
        if job.spec.get("source") == CONFIGURED:  # the file owns it (it would come back)
            result.errors.append(
                ErrorDetail(
                    "2009",
                    f"read schedule {mrid} is defined in the configuration "
                    "([[hes.read_schedules]]): remove it there",
                    xpath=xpath,
                    **by_mrid(mrid, "MeterReadSchedule"),
                )
            )
            continue
        if job.state not in CANCELLABLE[JobKind.READ] or not uow.hes_jobs.cancel(
            job.id, job.state, ctx.handler.now
        ):
            current = uow.hes_jobs.by_id(job.id)
            state = current.state if current is not None else job.state
            result.errors.append(
                ErrorDetail(
                    "2009",
                    f"read schedule {mrid} is {state}: it cannot be cancelled",
                    xpath=xpath,
                    **by_mrid(mrid, "MeterReadSchedule"),
                )
            )
            continue
        result.applied += 1
        cancelled.append(TimeSchedule(mrid=mrid))
    if cancelled:
        result.payload = render_meter_read_schedule(
            MeterReadSchedule(time_schedules=tuple(cancelled))
        )
    result.counts = {"schedules": len(request.time_schedules), "cancelled": result.applied}
    return result
