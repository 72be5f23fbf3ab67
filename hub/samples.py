"""Plausible, reproducible CIM MeterReadings messages for the demo, tests and benchmarks.

Consumption follows a household day curve with seeded noise; the writer
streams to a file-like object, so a message of any size is written with
bounded memory.
"""

from __future__ import annotations

import codecs
import io
import math
import random
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import IO, Any, cast

from lxml import etree

from cim_schemas.envelope import Header, RequestInfo, Style
from cim_schemas.meter_readings import Row, write_readings
from cim_schemas.namespaces import MESSAGE_NS, profile_ns
from hub.readings_codec import STORED_QUALITIES

#: 15-minute +A energy, delta (kWh)
RT_15MIN_A_PLUS = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
#: +A register, cumulative total (kWh)
RT_A_PLUS_TOTAL = "0.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
STEP = timedelta(minutes=15)


@dataclass(frozen=True)
class Interval:
    ts: datetime  # end of the interval, UTC
    value: Decimal


def consumption(meter: str, start: datetime, count: int, seed: int = 1) -> Iterator[Interval]:
    """15-minute deltas in kWh: a day curve (night low, morning and evening peaks) + noise."""
    rng = random.Random(f"{seed}:{meter}")
    scale = 0.6 + rng.random()  # household size
    ts = start
    for _ in range(count):
        ts += STEP
        hour = ts.hour + ts.minute / 60
        curve = (
            0.25
            + 0.5 * math.exp(-((hour - 7.5) ** 2) / 2)
            + 0.9 * math.exp(-((hour - 19.0) ** 2) / 4)
        )
        value = max(0.0, scale * curve / 4 * (0.8 + 0.4 * rng.random()))
        yield Interval(ts, Decimal(f"{value:.4f}"))


def write_meter_readings(
    out: IO[str],
    meters: Sequence[str],
    start: datetime,
    intervals: int,
    *,
    seed: int = 1,
    verb: str = "created",
    message_id: str | None = None,
    registers: bool = True,
    reading_type: str = RT_15MIN_A_PLUS,
) -> int:
    """Write one EventMessage/RequestMessage carrying MeterReadings; returns readings written."""
    root = "EventMessage" if verb.endswith("ed") else "RequestMessage"
    mid = message_id or str(uuid.uuid4())
    now = datetime.now(UTC).isoformat()
    out.write(
        f'<?xml version="1.0" encoding="UTF-8"?>\n<{root} xmlns="{MESSAGE_NS}" '
        f'xmlns:m="{profile_ns("MeterReadings")}">'
        f"<Header><Verb>{verb}</Verb><Noun>MeterReadings</Noun><Revision>2.0</Revision>"
        f"<Timestamp>{now}</Timestamp><Source>amihub-samples</Source>"
        f"<MessageID>{mid}</MessageID></Header><Payload>"
    )

    def rows() -> Iterator[Row]:
        for meter in meters:
            total = Decimal(0)
            for iv in consumption(meter, start, intervals, seed):
                total += iv.value
                yield meter, reading_type, iv.ts.isoformat(), str(iv.value), ""
            if registers:
                end = start + STEP * intervals
                yield meter, RT_A_PLUS_TOTAL, end.isoformat(), str(total), ""

    sink = _TextSink(out)
    with etree.xmlfile(sink, encoding="UTF-8") as xf:
        written = write_readings(xf, rows(), STORED_QUALITIES, cast(IO[bytes], sink), prefix="m")
    out.write(f"</Payload></{root}>\n")
    return written


class _TextSink(io.RawIOBase):
    """What the codec's writer writes (UTF-8 bytes) passed on to a text stream."""

    def __init__(self, out: IO[str]) -> None:
        super().__init__()
        self._out = out
        self._decode = codecs.getincrementaldecoder("utf-8")().decode

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._out.write(self._decode(bytes(data)))
        return len(data)


def meter_readings_bytes(
    meters: Sequence[str],
    start: datetime,
    intervals: int,
    *,
    seed: int = 1,
    verb: str = "created",
    message_id: str | None = None,
    registers: bool = True,
    reading_type: str = RT_15MIN_A_PLUS,
) -> bytes:
    """The same message as :func:`write_meter_readings`, in memory."""
    buf = io.StringIO()
    write_meter_readings(
        buf,
        meters,
        start,
        intervals,
        seed=seed,
        verb=verb,
        message_id=message_id,
        registers=registers,
        reading_type=reading_type,
    )
    return buf.getvalue().encode()


# -- master data messages (CIS side) ----------------------------------------------------


def _header(verb: str, noun: str, message_id: str | None) -> Header:
    return Header(
        verb=verb,
        noun=noun,
        timestamp=datetime.now(UTC),
        source="amihub-samples",
        message_id=message_id or str(uuid.uuid4()),
    )


def _request(
    verb: str,
    noun: str,
    payload: etree._Element | None,
    style: Style,
    message_id: str | None,
    request: RequestInfo | None = None,
) -> bytes:
    from cim_schemas.envelope import render_request

    return render_request(_header(verb, noun, message_id), request, payload, style=style)


def usage_point_config(
    verb: str,
    usage_points: Sequence[dict[str, str]],
    *,
    style: Style = "envelope",
    message_id: str | None = None,
) -> bytes:
    """UsagePointConfig request; each dict: mrid, and optionally name, kind, location,
    transformer_area, effective (ISO time for close)."""
    from cim_schemas.profiles.common import ConfigurationEvent, IdentifiedObject, Name, NameType
    from cim_schemas.profiles.usage_point_config import (
        UsagePoint,
        UsagePointConfig,
        render_usage_point_config,
    )

    items = []
    for up in usage_points:
        names = []
        if "name" in up:
            names.append(Name(up["name"]))
        if "transformer_area" in up:
            names.append(Name(up["transformer_area"], NameType("TransformerArea")))
        items.append(
            UsagePoint(
                mrid=up.get("mrid"),
                names=tuple(names),
                service_category=up.get("kind"),
                usage_point_location=IdentifiedObject(None, (Name(up["location"]),))
                if "location" in up
                else None,
                configuration_events=ConfigurationEvent(
                    effective_date_time=datetime.fromisoformat(up["effective"])
                )
                if "effective" in up
                else None,
            )
        )
    payload = render_usage_point_config(UsagePointConfig(tuple(items)))
    return _request(verb, "UsagePointConfig", payload, style, message_id)


def meter_config(
    verb: str,
    meters: Sequence[dict[str, str]],
    *,
    style: Style = "envelope",
    message_id: str | None = None,
) -> bytes:
    """MeterConfig request; each dict: mrid, and optionally serial, name, manufacturer, model."""
    from cim_schemas.profiles.common import Name
    from cim_schemas.profiles.meter_config import (
        AssetModel,
        Meter,
        MeterConfig,
        render_meter_config,
    )

    items = [
        Meter(
            mrid=m.get("mrid"),
            serial_number=m.get("serial"),
            names=(Name(m["name"]),) if "name" in m else (),
            asset_model=AssetModel(
                model_number=m.get("model"),
                manufacturer=(Name(m["manufacturer"]),) if "manufacturer" in m else (),
            )
            if "model" in m or "manufacturer" in m
            else None,
        )
        for m in meters
    ]
    payload = render_meter_config(MeterConfig(tuple(items)))
    return _request(verb, "MeterConfig", payload, style, message_id)


def linkage(
    verb: str,
    meter: str,
    usage_point: str,
    effective: datetime,
    *,
    style: Style = "envelope",
    message_id: str | None = None,
) -> bytes:
    """MasterDataLinkageConfig: install (create) or remove (close) a meter at a usage point."""
    from cim_schemas.profiles.common import ConfigurationEvent, IdentifiedObject
    from cim_schemas.profiles.master_data_linkage_config import (
        MasterDataLinkageConfig,
        render_master_data_linkage_config,
    )

    payload = render_master_data_linkage_config(
        MasterDataLinkageConfig(
            configuration_event=ConfigurationEvent(effective_date_time=effective),
            meters=(IdentifiedObject(meter),),
            usage_points=(IdentifiedObject(usage_point),),
        )
    )
    return _request(verb, "MasterDataLinkageConfig", payload, style, message_id)


# -- head-end messages: controls, events, read schedules -----------------------------------


def end_device_controls(
    verb: str,
    controls: Sequence[dict[str, object]],
    *,
    style: Style = "envelope",
    message_id: str | None = None,
) -> bytes:
    """EndDeviceControls request (create / cancel). Each dict: ``type`` (the
    EndDeviceControlType code), and optionally ``mrid`` (the job id), ``devices``
    (meter mRIDs), ``usage_points``, ``areas`` (UsagePointGroups by name),
    ``groups`` (EndDeviceGroups), ``start`` (datetime: primaryDeviceTiming), ``reason``,
    ``price_signal`` ((value, multiplier, unit), e.g. ``("4.5", "k", "W")``: a load
    limit), ``command`` and ``activate_at`` (EndDeviceAction command / startDateTime: a
    calendar or firmware reference, docs/controls.md)."""
    from cim_schemas.profiles.common import DateTimeInterval, IdentifiedObject
    from cim_schemas.profiles.end_device_controls import (
        EndDeviceAction,
        EndDeviceControl,
        EndDeviceControls,
        EndDeviceTiming,
        FloatQuantity,
        render_end_device_controls,
    )

    def objs(key: str, c: dict[str, object], by_name: bool = False) -> tuple[IdentifiedObject, ...]:
        values = c.get(key) or ()
        assert isinstance(values, list | tuple)
        return tuple(
            IdentifiedObject.by_name(str(v)) if by_name else IdentifiedObject(str(v))
            for v in values
        )

    items = []
    for c in controls:
        start = c.get("start")
        assert start is None or isinstance(start, datetime)
        reason = c.get("reason")
        mrid = c.get("mrid")
        signal = c.get("price_signal")
        price_signal = None
        if signal is not None:
            assert isinstance(signal, tuple)
            assert len(signal) == 3
            value, multiplier, unit = signal
            price_signal = FloatQuantity(
                Decimal(str(value)),
                None if multiplier is None else str(multiplier),
                None if unit is None else str(unit),
            )
        command = c.get("command")
        activate_at = c.get("activate_at")
        assert activate_at is None or isinstance(activate_at, datetime)
        action = (
            EndDeviceAction(
                command=None if command is None else str(command), start_date_time=activate_at
            )
            if command is not None or activate_at is not None
            else None
        )
        items.append(
            EndDeviceControl(
                end_device_control_type=str(c["type"]),
                mrid=str(mrid) if mrid is not None else None,
                price_signal=price_signal,
                reason=str(reason) if reason is not None else None,
                end_device_action=action,
                end_device_groups=objs("groups", c),
                end_devices=objs("devices", c),
                primary_device_timing=EndDeviceTiming(interval=DateTimeInterval(start=start))
                if start is not None
                else None,
                usage_point_groups=objs("areas", c, by_name=True),
                usage_points=objs("usage_points", c),
            )
        )
    payload = render_end_device_controls(EndDeviceControls(tuple(items)))
    return _request(verb, "EndDeviceControls", payload, style, message_id)


def get_end_device_events(
    meters: Sequence[str] = (),
    start: datetime | None = None,
    end: datetime | None = None,
    *,
    usage_points: Sequence[str] = (),
    event_types: Sequence[str] = (),
    job: str | None = None,
    style: Style = "envelope",
    message_id: str | None = None,
) -> bytes:
    """get EndDeviceEvents: meters and usage points as Request/ID, the period as
    StartTime/EndTime, filters as Options (``EndDeviceEventType``, ``job``)."""
    from cim_schemas.envelope import RequestID

    options = [("EndDeviceEventType", t) for t in event_types]
    if job is not None:
        options.append(("job", job))
    request = RequestInfo(
        start_time=start,
        end_time=end,
        options=tuple(options),
        ids=tuple(RequestID(m, id_type="EndDevice") for m in meters)
        + tuple(RequestID(u, id_type="UsagePoint") for u in usage_points),
    )
    return _request("get", "EndDeviceEvents", None, style, message_id, request)


def end_device_events(
    verb: str,
    events: Sequence[dict[str, object]],
    *,
    style: Style = "envelope",
    message_id: str | None = None,
) -> bytes:
    """EndDeviceEvents from another head-end (create / created). Each dict: ``meter``,
    ``type``, ``at`` (datetime), and optionally ``mrid``, ``reason``, ``details`` (dict)."""
    from cim_schemas.envelope import render_event
    from cim_schemas.profiles.common import IdentifiedObject
    from cim_schemas.profiles.end_device_events import (
        EndDeviceEvent,
        EndDeviceEvents,
        render_end_device_events,
    )

    items = []
    for e in events:
        at = e.get("at")
        assert at is None or isinstance(at, datetime)
        details = e.get("details") or {}
        assert isinstance(details, dict)
        mrid, reason = e.get("mrid"), e.get("reason")
        items.append(
            EndDeviceEvent(
                end_device_event_type=str(e["type"]),
                mrid=str(mrid) if mrid is not None else None,
                created_date_time=at,
                reason=str(reason) if reason is not None else None,
                assets=IdentifiedObject(str(e["meter"])) if e.get("meter") else None,
                details=tuple((str(k), str(v)) for k, v in details.items()),
            )
        )
    payload = render_end_device_events(EndDeviceEvents(tuple(items)))
    if verb.endswith("ed"):
        return render_event(_header(verb, "EndDeviceEvents", message_id), payload, style=style)
    return _request(verb, "EndDeviceEvents", payload, style, message_id)


def meter_read_schedule(
    meters: Sequence[str],
    start: datetime | None = None,
    end: datetime | None = None,
    *,
    usage_points: Sequence[str] = (),
    reading_types: Sequence[str] = (),
    style: Style = "envelope",
    message_id: str | None = None,
    verb: str = "create",
    mrid: str | None = None,
    recurrence_period: int | None = None,
    recurrence_pattern: str | None = None,
    groups: Sequence[str] = (),
) -> bytes:
    """create MeterReadSchedule: an on-demand read of the meters over (start, end]; with
    ``recurrence_period`` (seconds) / ``recurrence_pattern`` or a future ``start``, a
    stored read schedule (``mrid``: its TimeSchedule mRID). ``verb="cancel"`` with
    ``mrid``: cancel that schedule. ``groups``: EndDeviceGroups by mRID."""
    from decimal import Decimal

    from cim_schemas.profiles.common import DateTimeInterval, IdentifiedObject
    from cim_schemas.profiles.meter_read_schedule import (
        MeterReadSchedule,
        TimeSchedule,
        render_meter_read_schedule,
    )

    schedule = MeterReadSchedule(
        end_devices=tuple(IdentifiedObject(m) for m in meters),
        reading_types=tuple(IdentifiedObject(rt) for rt in reading_types),
        time_schedules=(
            TimeSchedule(
                mrid=mrid,
                recurrence_pattern=recurrence_pattern,
                recurrence_period=None if recurrence_period is None else Decimal(recurrence_period),
                schedule_interval=DateTimeInterval(start, end)
                if start is not None or end is not None
                else None,
            ),
        )
        if start is not None or end is not None or mrid or recurrence_period or recurrence_pattern
        else (),
        usage_points=tuple(IdentifiedObject(u) for u in usage_points),
        end_device_groups=tuple(IdentifiedObject(g) for g in groups),
    )
    payload = render_meter_read_schedule(schedule)
    return _request(verb, "MeterReadSchedule", payload, style, message_id)


def end_device_groups(
    verb: str,
    groups: Sequence[dict[str, object]],
    *,
    style: Style = "envelope",
    message_id: str | None = None,
) -> bytes:
    """EndDeviceGroups request (create / change / close / delete). Each dict: ``mrid``,
    and optionally ``name``, ``description``, ``devices`` (meter mRIDs; ``None``: no
    EndDevices element, so a change keeps the membership)."""
    from cim_schemas.profiles.common import IdentifiedObject, Name
    from cim_schemas.profiles.end_device_groups import (
        EndDeviceGroup,
        EndDeviceGroups,
        render_end_device_groups,
    )

    items = []
    for g in groups:
        devices = g.get("devices")
        assert devices is None or isinstance(devices, list | tuple)
        name, description, mrid = g.get("name"), g.get("description"), g.get("mrid")
        items.append(
            EndDeviceGroup(
                mrid=None if mrid is None else str(mrid),
                description=None if description is None else str(description),
                end_devices=tuple(IdentifiedObject(str(d)) for d in devices or ()),
                names=(Name(str(name)),) if name is not None else (),
            )
        )
    payload = render_end_device_groups(EndDeviceGroups(tuple(items)))
    return _request(verb, "EndDeviceGroups", payload, style, message_id)
