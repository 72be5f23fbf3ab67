"""get MeterReadings: read stored readings and answer them as a MeterReadings profile.

Accepted requests (both validated by the pipeline before they get here):

* the generic ``RequestMessage`` whose ``Request`` carries the
  ``{http://iec.ch/TC57/2011/GetMeterReadings#}GetMeterReadings`` profile element;
* the 61968-9 wrapper ``{http://iec.ch/TC57/2011/GetMeterReadingsMessage}GetMeterReadings``.

What to read: ``EndDevice`` (by mRID or Names/name), ``UsagePoint`` (the meters
installed there in the period), ``EndDeviceGroup`` (by mRID or Names/name: the
group's members as they are now, at most ``max_group_meters`` through groups in one
get), ``ReadingType`` (mRID = the 18-field code; none = all). The period is each
``TimeSchedule/scheduleInterval``, else ``Request/StartTime`` .. ``Request/EndTime``.
A reading belongs to a period when ``start < timeStamp <= end`` (interval readings
are stamped at the end of their interval, so the day 00:00..24:00 holds 00:15 ..
24:00).

Unknown meters get one Error each (code 2001, the ID named), unknown usage
points code 2002, unknown, closed or empty end device groups 2015; the others are
answered, so the Result is PARTIAL (FAILED if nothing could be resolved). Groups
whose members together exceed ``max_group_meters`` refuse the get as a whole (2013 at
the group that went over): nothing is read.

The reply is written by the MeterReadings codec (:mod:`cim_schemas.meter_readings`)
from the store's rows as text: :meth:`GetMeterReadingsRoute.write_reply` streams it
into the ResponseMessage (:func:`cim_schemas.envelope.response_writer`), the read
path's way; :meth:`GetMeterReadingsRoute.handle` makes the same answer a tree, for
the full path.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import IO, Final

from lxml import etree

from cim_schemas.codes.reading_type import ReadingType
from cim_schemas.envelope import Header, Reply, RequestInfo, response_writer
from cim_schemas.errors import ErrorDetail, ItemRejected, PayloadInvalid, named_object
from cim_schemas.meter_readings import render_readings, value_text, write_readings
from cim_schemas.namespaces import profile_ns
from cim_schemas.profiles._common import IdentifiedObject
from cim_schemas.profiles.get_meter_readings import (
    EndDeviceRef,
    GetMeterReadings,
    parse_get_meter_readings,
)
from hub.journal import MessageJournal
from hub.readings_codec import STORED_QUALITIES
from hub.routing import MessageFrame, RouteContext, RouteResult
from mdm.commands import QueryMeterReadings
from mdm.handlers import ReadingQueryResult
from mdm.model import DeviceRef, StoredReading
from mdm.ports import ReadingText, UnitOfWork

MAX_ERRORS: Final = 100
#: meters one get may read through EndDeviceGroups, all its groups together
#: (``[limits] max_group_meters``): a meter-day of each is about 10 KB of reply
DEFAULT_MAX_GROUP_METERS: Final = 10_000
#: meters x days one get may read (``[limits] max_get_meter_days``): a meter-day of
#: 15-minute values is about 10 KB of reply, so 100,000 about 1 GB
DEFAULT_MAX_GET_METER_DAYS: Final = 100_000
#: what a period without start or end counts for that limit (days)
OPEN_PERIOD_DAYS: Final = 366
#: the store is asked for a little more than the period; the route keeps (start, end]
#: exactly, whichever boundary convention the store's query uses
_MARGIN: Final = timedelta(seconds=1)


@dataclass(frozen=True)
class Period:
    start: datetime | None = None
    end: datetime | None = None

    def contains(self, ts: datetime) -> bool:
        return (self.start is None or ts > self.start) and (self.end is None or ts <= self.end)


@dataclass
class ReadQuery:
    """A GetMeterReadings request in domain terms."""

    meters: list[DeviceRef] = field(default_factory=list)
    usage_points: list[DeviceRef] = field(default_factory=list)
    groups: list[DeviceRef] = field(default_factory=list)  # EndDeviceGroups
    reading_types: list[str] = field(default_factory=list)
    periods: list[Period] = field(default_factory=list)


#: the NameType of a DeviceRef made from an EndDevice's serialNumber
SERIAL_NUMBER: Final = "serialNumber"


def _ref(obj: IdentifiedObject) -> DeviceRef | None:
    """How the get names an object: its mRID, else its first Names/name (with its
    NameType), else an EndDevice's serialNumber (a name matches a meter's name or
    serial number; docs/soap.md)."""
    if obj.mrid and obj.mrid.strip():
        return DeviceRef(mrid=obj.mrid.strip())
    name = obj.name()
    if name and name.strip():
        return DeviceRef(name=name.strip(), name_type=obj.name_type)
    serial = obj.serial_number if isinstance(obj, EndDeviceRef) else None
    if serial and serial.strip():
        return DeviceRef(name=serial.strip(), name_type=SERIAL_NUMBER)
    return None


def read_query(frame: MessageFrame) -> ReadQuery:
    """The request's profile element and Request times as a :class:`ReadQuery`."""
    request: RequestInfo | None = frame.request
    root = frame.root_name
    if request is None or request.get is None:
        raise PayloadInvalid(
            "get MeterReadings needs Request/GetMeterReadings (what to read)",
            code="1009",
            xpath=f"/{root}/Request",
        )
    if etree.QName(request.get).namespace != profile_ns("GetMeterReadings"):
        raise PayloadInvalid(
            f"Request carries {etree.QName(request.get).localname}, not the GetMeterReadings "
            "profile",
            code="1009",
            xpath=f"/{root}/Request/{etree.QName(request.get).localname}",
        )
    profile: GetMeterReadings = parse_get_meter_readings(request.get)
    base = f"/{root}/Request/GetMeterReadings"
    query = ReadQuery()
    errors: list[ErrorDetail] = []
    for n, device in enumerate(profile.end_devices, 1):
        ref = _ref(device)
        if ref is None:
            errors.append(
                ErrorDetail(
                    "2011",
                    "EndDevice has neither mRID nor Names/name nor serialNumber",
                    xpath=f"{base}/EndDevice[{n}]",
                )
            )
        else:
            query.meters.append(ref)
    for n, up in enumerate(profile.usage_points, 1):
        ref = _ref(up)
        if ref is None:
            errors.append(
                ErrorDetail(
                    "2011",
                    "UsagePoint has neither mRID nor Names/name",
                    xpath=f"{base}/UsagePoint[{n}]",
                )
            )
        else:
            query.usage_points.append(ref)
    for n, group in enumerate(profile.end_device_groups, 1):
        ref = _ref(group)
        if ref is None:
            errors.append(
                ErrorDetail(
                    "2011",
                    "EndDeviceGroup has neither mRID nor Names/name",
                    xpath=f"{base}/EndDeviceGroup[{n}]",
                )
            )
        else:
            query.groups.append(ref)
    for n, rt in enumerate(profile.reading_types, 1):
        code = (rt.mrid or rt.name() or "").strip()
        try:
            query.reading_types.append(str(ReadingType.parse(code)))
        except ValueError as exc:
            errors.append(
                ErrorDetail(
                    "2003", f"ReadingType {code!r}: {exc}", xpath=f"{base}/ReadingType[{n}]"
                )
            )
    if profile.usage_point_groups:
        errors.append(
            ErrorDetail(
                "1011",
                "reading by UsagePointGroup is not implemented yet: name the EndDevices, "
                "UsagePoints or EndDeviceGroups",
                xpath=f"{base}/UsagePointGroup[1]",
            )
        )
    for schedule in profile.time_schedules:
        query.periods.append(Period(schedule.start, schedule.end))
    if not query.periods:
        query.periods.append(Period(request.start_time, request.end_time))
    for n, period in enumerate(query.periods, 1):
        if period.start is not None and period.end is not None and period.end < period.start:
            where = f"{base}/TimeSchedule[{n}]" if profile.time_schedules else f"/{root}/Request"
            errors.append(
                ErrorDetail(
                    "2013",
                    f"the period ends ({period.end.isoformat()}) before it starts "
                    f"({period.start.isoformat()})",
                    xpath=where,
                )
            )
    if errors:
        raise PayloadInvalid(f"get MeterReadings: {errors[0].reason}", errors=errors)
    if not query.meters and not query.usage_points and not query.groups:
        raise PayloadInvalid(
            "get MeterReadings names no EndDevice, UsagePoint or EndDeviceGroup",
            code="2011",
            xpath=base,
        )
    return query


# -- reading the store ----------------------------------------------------------------------


def check_meter_days(
    query: ReadQuery, frame: MessageFrame, ctx: RouteContext, uow: UnitOfWork, limit: int
) -> None:
    """Refuse a get that would read more than ``limit`` meter-days (1003, a Fault naming
    the limit) before any reading is read: the meters named, one per usage point, and
    the member count of each group, times the days of all periods (a period open at
    either end counts :data:`OPEN_PERIOD_DAYS`)."""
    days = 0.0
    for period in query.periods:
        if period.start is None or period.end is None:
            days += OPEN_PERIOD_DAYS
        else:
            days += (period.end - period.start).total_seconds() / 86_400
    meters = len(set(query.meters)) + len(set(query.usage_points))
    if meters * days <= limit and not query.groups:
        return
    for ref in dict.fromkeys(query.groups):
        group = uow.end_device_groups.find(ctx.utility_id, ref)
        if group is not None and group.is_open:
            meters += group.members
    asked = meters * days
    if asked > limit:
        reason = (
            f"this get asks {asked:,.0f} meter-days ({meters} meters x {days:g} days); one get "
            f"reads at most {limit:,} ([limits] max_get_meter_days): ask fewer meters or "
            "shorter periods"
        )
        raise PayloadInvalid(
            reason,
            errors=[
                ErrorDetail("1003", reason, xpath=f"/{frame.root_name}/Request/GetMeterReadings")
            ],
        )


@dataclass
class ReadResult:
    readings: Iterator[StoredReading]
    errors: list[ErrorDetail]
    resolved: int  # meters and usage points found
    #: with ``as_text``: the readings as reply text (``readings`` is then empty)
    texts: Iterator[ReadingText] = field(default_factory=lambda: iter(()))


def run_query(
    query: ReadQuery,
    frame: MessageFrame,
    ctx: RouteContext,
    uow: UnitOfWork,
    *,
    as_text: bool = False,
    max_group_meters: int | None = None,
) -> ReadResult:
    """The readings of ``query``, period after period. With ``as_text`` they come as
    :class:`ReadingText` straight from the store, which keeps ``start < ts <= end``
    exactly (the port's contract); objects are asked with a margin and filtered here.
    More than ``max_group_meters`` meters through EndDeviceGroups: PayloadInvalid 2013
    at the group that went over (before any reading is asked)."""
    base = f"/{frame.root_name}/Request/GetMeterReadings"
    results: list[ReadQueryPart] = []
    texts: list[Iterator[ReadingText]] = []
    errors: list[ErrorDetail] = []
    for period in query.periods:
        margin = _MARGIN if not as_text else timedelta(0)
        cmd = QueryMeterReadings(
            utility_id=ctx.utility_id,
            meters=tuple(query.meters),
            usage_points=tuple(query.usage_points),
            reading_types=tuple(query.reading_types),
            start=period.start,
            end=period.end + margin if period.end is not None else None,
            as_text=as_text,
            end_device_groups=tuple(query.groups),
            max_group_meters=max_group_meters,
        )
        try:
            found: ReadingQueryResult = ctx.bus.handle(cmd, uow, ctx.handler)
        except ItemRejected as exc:  # the groups' limit: the get as a whole is refused
            for part in texts:
                _close(part)
            position = _position(query.groups, exc)
            raise PayloadInvalid(
                exc.reason, errors=[exc.detail(f"{base}/EndDeviceGroup[{position}]")]
            ) from exc
        if as_text:
            texts.append(found.texts)
        else:
            results.append(ReadQueryPart(found.readings, period))
        if not errors:  # the same references each period: report them once
            errors.extend(
                _unknown(query.meters, found.unknown_meters, "2001", "meter", base, "EndDevice")
            )
            _audit_other_utilities(found.unknown_meters, ctx, uow)
            errors.extend(
                _unknown(
                    query.usage_points,
                    found.unknown_usage_points,
                    "2002",
                    "usage point",
                    base,
                    "UsagePoint",
                )
            )
            errors.extend(
                ErrorDetail(
                    "2015",
                    g.reason,
                    xpath=f"{base}/EndDeviceGroup[{query.groups.index(g.ref) + 1}]"
                    if g.ref in query.groups
                    else f"{base}/EndDeviceGroup[1]",
                    **named_object(g.ref, "EndDeviceGroup"),
                )
                for g in found.unusable_groups
            )
    unknown = sum(1 for e in errors if e.code in ("2001", "2002", "2015"))
    resolved = len(query.meters) + len(query.usage_points) + len(query.groups) - unknown
    return ReadResult(_chain(results), errors[:MAX_ERRORS], resolved, _chain_texts(texts))


def _audit_other_utilities(unknown: list[DeviceRef], ctx: RouteContext, uow: UnitOfWork) -> None:
    """A meter of another utility is answered as unknown (2001: its existence is not
    told) and audited as a refused read, as a refused write is."""
    mrids = [r.mrid for r in unknown if r.mrid]
    if not mrids:
        return
    for mrid in sorted(uow.devices.held_elsewhere(ctx.utility_id, mrids)):
        MessageJournal.audit(
            uow,
            ctx.handler.actor,
            "refused",
            "get MeterReadings",
            mrid,
            f"meter {mrid} is not a meter of utility {ctx.utility_code}",
        )


@dataclass
class ReadQueryPart:
    readings: Iterator[StoredReading]
    period: Period


def _chain(parts: list[ReadQueryPart]) -> Iterator[StoredReading]:
    for part in parts:
        contains = part.period.contains
        for reading in part.readings:
            if contains(reading.ts):
                yield reading


def _chain_texts(parts: list[Iterator[ReadingText]]) -> Iterator[ReadingText]:
    """The periods' rows one after the other; closing it closes every part (a store
    stream holds its connection until read to the end or closed)."""
    try:
        for part in parts:
            yield from part
    finally:
        for part in parts:
            _close(part)


def _close(rows: Iterator[ReadingText]) -> None:
    close = getattr(rows, "close", None)
    if close is not None:
        close()


def _position(asked: list[DeviceRef], refused: ItemRejected) -> int:
    """1-based position of the reference a rejection names in its Error/ID (1 if none)."""
    for n, ref in enumerate(asked, 1):
        if named_object(ref, "EndDeviceGroup")["object_id"] == refused.object_id and (
            refused.object_id_type is None or ref.name_type == refused.object_id_type
        ):
            return n
    return 1


def _unknown(
    asked: list[DeviceRef], unknown: list[DeviceRef], code: str, what: str, base: str, tag: str
) -> list[ErrorDetail]:
    out: list[ErrorDetail] = []
    for ref in unknown:
        position = asked.index(ref) + 1 if ref in asked else 1
        out.append(
            ErrorDetail(
                code,
                f"unknown {what} {ref}",
                xpath=f"{base}/{tag}[{position}]",
                **named_object(ref, tag),
            )
        )
    return out


# -- rendering -------------------------------------------------------------------------------


def as_text(readings: Iterable[StoredReading | ReadingText]) -> Iterator[ReadingText]:
    """Stored readings as reply text (text rows pass through)."""
    new = tuple.__new__
    for r in readings:
        if isinstance(r, ReadingText):
            yield r
        else:
            yield new(
                ReadingText,
                (r.device_mrid, r.reading_type, r.ts.isoformat(), value_text(r.value), r.quality),
            )


# -- the route -------------------------------------------------------------------------------


@dataclass
class GetMeterReadingsRoute:
    """get MeterReadings: answer stored readings (tree reply; see :func:`write_reply`)."""

    noun: str = "MeterReadings"
    verbs: frozenset[str] = frozenset({"get"})
    streaming: bool = False
    stream_tags: tuple[str, ...] = ()
    #: meters one get may read through EndDeviceGroups ([limits] max_group_meters)
    max_group_meters: int = DEFAULT_MAX_GROUP_METERS
    #: meters x days one get may read ([limits] max_get_meter_days)
    max_meter_days: int = DEFAULT_MAX_GET_METER_DAYS

    def handle(self, frame: MessageFrame, ctx: RouteContext, uow: UnitOfWork) -> RouteResult:
        query = read_query(frame)
        check_meter_days(query, frame, ctx, uow, self.max_meter_days)
        found = run_query(query, frame, ctx, uow, max_group_meters=self.max_group_meters)
        payload, count = render_readings(as_text(found.readings), STORED_QUALITIES)
        return RouteResult(
            errors=found.errors,
            applied=found.resolved,
            payload=payload,
            counts={"readings": count, "meters": len(payload)},
        )

    def write_reply(
        self, out: IO[bytes], frame: MessageFrame, ctx: RouteContext, uow: UnitOfWork
    ) -> RouteResult:
        """The same answer written incrementally to ``out`` (bounded memory), for a
        pipeline that streams replies; the result carries no payload element. The
        readings come from the store as text (``ReadingRepository.query_text``)."""
        query = read_query(frame)
        check_meter_days(query, frame, ctx, uow, self.max_meter_days)
        found = run_query(
            query, frame, ctx, uow, as_text=True, max_group_meters=self.max_group_meters
        )
        # the Reply (with its errors) precedes the Payload: errors are known before reading
        result = RouteResult(errors=found.errors, applied=found.resolved)
        reply = Reply(result=result.result, errors=tuple(result.errors))
        header: Header = frame.header
        texts = found.texts
        try:
            with response_writer(out, header, reply, style=frame.style, noun="MeterReadings") as xf:
                result.counts["readings"] = write_readings(xf, texts, STORED_QUALITIES, raw=out)
        finally:
            close = getattr(texts, "close", None)
            if close is not None:
                close()
        return result
