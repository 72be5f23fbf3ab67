"""EndDeviceEvents: events of meters, stored and answered.

``create`` / ``created`` (events from other head-ends): each EndDeviceEvent is
stored for the meter its ``Assets`` names (mRID or Names/name; unknown: 2001;
none: 2011), with its EndDeviceEventType (not a code: 2013) and createdDateTime
(missing: 2006); mRID, reason, severity and EndDeviceEventDetails are kept. The
others of the message are stored (PARTIAL). Subscribers hear of accepted AMQP
requests from the AMQP adapter itself (``created.EndDeviceEvents``); events that
start inside amihub (control jobs) go through the outbox (:mod:`hub.headend`).

``get``: the events of a period, oldest first, answered as an EndDeviceEvents
payload. Period: ``Request/StartTime`` <= createdDateTime < ``Request/EndTime``
(either may be left out). Which meters: ``Request/ID`` (idType ``UsagePoint`` for a
usage point, anything else a meter) and/or a query-by-example Payload whose
EndDeviceEvents name ``Assets`` (meters) or ``UsagePoint``; none named: every meter
of the utility. A usage point stands for the meters installed there during the
period. ``Request/Option`` ``EndDeviceEventType`` (repeatable) keeps those types
only, ``job`` the records of one control job. At most :data:`MAX_EVENTS` events are
answered (more: FAILED with 2013, narrow the period).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

from lxml import etree

from cim_schemas.codes import event_type
from cim_schemas.envelope import RequestInfo
from cim_schemas.errors import ErrorDetail, PayloadInvalid, named_object
from cim_schemas.profiles.common import IdentifiedObject
from cim_schemas.profiles.end_device_events import (
    EndDeviceEvents,
    parse_end_device_events,
    render_end_device_events,
)
from cim_schemas.values import parse_datetime
from hub.headend import cim_event
from hub.routing import MessageFrame, RouteContext, RouteResult
from mdm.model import DeviceRef, EndDeviceEvent
from mdm.ports import UnitOfWork

MAX_EVENTS: Final = 10_000
MAX_ERRORS: Final = 100


def _ref(obj: IdentifiedObject | None) -> DeviceRef | None:
    if obj is None:
        return None
    if obj.mrid and obj.mrid.strip():
        return DeviceRef(mrid=obj.mrid.strip())
    name = obj.name()
    if name and name.strip():
        return DeviceRef(name=name.strip(), name_type=obj.name_type)
    return None


@dataclass
class EndDeviceEventsRoute:
    """create / created EndDeviceEvents: store events from other head-ends."""

    noun: str = "EndDeviceEvents"
    verbs: frozenset[str] = frozenset({"create", "created"})
    streaming: bool = False

    def handle(self, frame: MessageFrame, ctx: RouteContext, uow: UnitOfWork) -> RouteResult:
        if frame.payload is None:
            raise PayloadInvalid(
                f"{frame.header.verb} EndDeviceEvents needs a Payload",
                code="1009",
                xpath=f"/{frame.root_name}/Payload",
            )
        items = parse_end_device_events(frame.payload).end_device_events
        result = RouteResult()
        events: list[EndDeviceEvent] = []
        for n, item in enumerate(items, 1):
            base = f"{frame.payload_xpath}/EndDeviceEvent[{n}]"
            ref = _ref(item.assets)
            code = item.end_device_event_type.strip()
            error: ErrorDetail | None = None
            device = None
            if ref is None:
                error = ErrorDetail(
                    "2011", "the event names no meter (Assets mRID or Names/name)", xpath=base
                )
            elif not event_type.is_valid_code(code):
                error = ErrorDetail(
                    "2013",
                    f"EndDeviceEventType {code!r} is not type.domain.subDomain.eventOrAction",
                    xpath=f"{base}/EndDeviceEventType",
                )
            elif item.created_date_time is None:
                error = ErrorDetail(
                    "2006", "the event has no createdDateTime", xpath=f"{base}/createdDateTime"
                )
            else:
                device = uow.devices.find(ctx.utility_id, ref)
                if device is None:
                    error = ErrorDetail(
                        "2001",
                        f"unknown meter {ref}",
                        xpath=f"{base}/Assets",
                        **named_object(ref, "EndDevice"),
                    )
            if error is not None:
                if len(result.errors) < MAX_ERRORS:
                    result.errors.append(error)
                continue
            assert device is not None
            assert item.created_date_time is not None
            events.append(
                EndDeviceEvent(
                    device_mrid=device.mrid,
                    event_type=code,
                    created_at=item.created_date_time,
                    reason=item.reason,
                    severity=item.severity,
                    mrid=item.mrid,
                    details={k or "": v or "" for k, v in item.details},
                )
            )
        result.applied = uow.events.add_many(ctx.utility_id, events) if events else 0
        # an event whose mRID the utility already stored (or repeated here) is kept once
        result.counts = {
            "events": len(items),
            "stored": result.applied,
            "already_stored": len(events) - result.applied,
        }
        return result


@dataclass
class GetEndDeviceEventsRoute:
    """get EndDeviceEvents: stored events of meters in a period."""

    noun: str = "EndDeviceEvents"
    verbs: frozenset[str] = frozenset({"get"})
    streaming: bool = False

    def handle(self, frame: MessageFrame, ctx: RouteContext, uow: UnitOfWork) -> RouteResult:
        request = frame.request
        start = request.start_time if request else None
        end = request.end_time if request else None
        root = frame.root_name
        named = _get_profile(request, root) if request is not None else None
        if named is not None and start is None and end is None:
            start, end = named.start, named.end
        if start is not None and end is not None and end < start:
            raise PayloadInvalid(
                f"the period ends ({end.isoformat()}) before it starts ({start.isoformat()})",
                xpath=f"/{root}/Request/EndTime",
            )
        meters: list[tuple[DeviceRef, str]] = []
        ups: list[tuple[DeviceRef, str]] = []
        if named is not None:
            meters.extend(named.meters)
            ups.extend(named.usage_points)
        if request is not None:
            for n, rid in enumerate(request.ids, 1):
                value = rid.value.strip()
                target = ups if (rid.id_type or "").lower() == "usagepoint" else meters
                target.append((DeviceRef(mrid=value), f"/{root}/Request/ID[{n}]"))
        if frame.payload is not None:
            for n, item in enumerate(parse_end_device_events(frame.payload).end_device_events, 1):
                base = f"{frame.payload_xpath}/EndDeviceEvent[{n}]"
                if (ref := _ref(item.assets)) is not None:
                    meters.append((ref, f"{base}/Assets"))
                if (ref := _ref(item.usage_point)) is not None:
                    ups.append((ref, f"{base}/UsagePoint"))
        types = {
            v.strip()
            for k, v in (request.options if request else ())
            if k == "EndDeviceEventType" and v
        }
        job = request.option("job") if request else None
        result = RouteResult()
        device_ids: set[int] | None = None
        if meters or ups:
            device_ids = set()
            for ref, xpath in meters:
                found = uow.devices.find(ctx.utility_id, ref)
                if found is None or found.id is None:
                    result.errors.append(
                        ErrorDetail(
                            "2001",
                            f"unknown meter {ref}",
                            xpath=xpath,
                            **named_object(ref, "EndDevice"),
                        )
                    )
                else:
                    device_ids.add(found.id)
                    result.applied += 1
            for ref, xpath in ups:
                up = uow.usage_points.find(ctx.utility_id, ref)
                if up is None or up.id is None:
                    result.errors.append(
                        ErrorDetail(
                            "2002",
                            f"unknown usage point {ref}",
                            xpath=xpath,
                            **named_object(ref, "UsagePoint"),
                        )
                    )
                else:
                    device_ids.update(
                        d for d, _, _ in uow.installations.devices_at(up.id, start, end)
                    )
                    result.applied += 1
            if not device_ids:
                return result
        found_events = [
            e
            for e in uow.events.query(
                ctx.utility_id, sorted(device_ids) if device_ids is not None else None, start, end
            )
            if (not types or e.event_type in types) and (job is None or e.details.get("job") == job)
        ]
        if len(found_events) > MAX_EVENTS:
            raise PayloadInvalid(
                f"{len(found_events)} events match; at most {MAX_EVENTS} are answered: "
                "narrow the period or name meters",
                xpath=f"/{root}/Request",
            )
        if device_ids is None:
            result.applied = 1
        result.payload = render_end_device_events(
            EndDeviceEvents(tuple(cim_event(e) for e in found_events))
        )
        result.counts = {"events": len(found_events)}
        return result


@dataclass
class _Named:
    """What a Get profile element in Request (the standard's
    ``{http://iec.ch/TC57/2011/GetEndDeviceEvents#}GetEndDeviceEvents``, which our XSD
    accepts lax) names: EndDevice and UsagePoint by mRID or Names/name, and the period
    of its first TimeSchedule/scheduleInterval."""

    meters: list[tuple[DeviceRef, str]]
    usage_points: list[tuple[DeviceRef, str]]
    start: datetime | None = None
    end: datetime | None = None


def _get_profile(request: RequestInfo, root: str) -> _Named | None:
    get = request.get
    if get is None:
        return None
    base = f"/{root}/Request/{etree.QName(get).localname}"
    named = _Named([], [])
    seen: dict[str, int] = {}
    for child in get:
        if not isinstance(child.tag, str):
            continue
        local = etree.QName(child).localname
        n = seen[local] = seen.get(local, 0) + 1
        where = f"{base}/{local}[{n}]"
        if local in ("EndDevice", "EndDevices", "Meter", "UsagePoint", "UsagePoints"):
            mrid = (child.findtext("{*}mRID") or "").strip()
            name = (child.findtext("{*}Names/{*}name") or "").strip()
            if not mrid and not name:
                raise PayloadInvalid(
                    f"{local} has neither mRID nor Names/name", code="2011", xpath=where
                )
            ref = DeviceRef(mrid=mrid) if mrid else DeviceRef(name=name)
            target = named.usage_points if local.startswith("UsagePoint") else named.meters
            target.append((ref, where))
        elif local == "TimeSchedule" and named.start is None and named.end is None:
            try:
                named.start = _instant(child.findtext("{*}scheduleInterval/{*}start"))
                named.end = _instant(child.findtext("{*}scheduleInterval/{*}end"))
            except ValueError as exc:
                raise PayloadInvalid(
                    f"TimeSchedule/scheduleInterval: {exc}", code="2006", xpath=where
                ) from None
    return named


def _instant(text: str | None) -> datetime | None:
    return parse_datetime(text) if text is not None and text.strip() else None
