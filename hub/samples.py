"""Plausible, reproducible CIM MeterReadings messages for the demo, tests and benchmarks.

Consumption follows a household day curve with seeded noise; the writer
streams to a file-like object, so a message of any size is written with
bounded memory.
"""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import IO
from xml.sax.saxutils import escape

from lxml import etree

from cim_schemas.envelope import Style
from cim_schemas.namespaces import MESSAGE_NS, profile_ns

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
        f"<MessageID>{mid}</MessageID></Header><Payload><m:MeterReadings>"
    )
    written = 0
    for meter in meters:
        total = Decimal(0)
        out.write("<m:MeterReading><m:IntervalBlocks>")
        parts = []
        for iv in consumption(meter, start, intervals, seed):
            total += iv.value
            parts.append(
                f"<m:IntervalReadings><m:timeStamp>{iv.ts.isoformat()}</m:timeStamp>"
                f"<m:value>{iv.value}</m:value></m:IntervalReadings>"
            )
            if len(parts) >= 4096:
                out.write("".join(parts))
                parts.clear()
        out.write("".join(parts))
        written += intervals
        out.write(f'<m:ReadingType ref="{reading_type}"/></m:IntervalBlocks>')
        out.write(f"<m:Meter><m:mRID>{escape(meter)}</m:mRID></m:Meter>")
        if registers:
            end = start + STEP * intervals
            out.write(
                f"<m:Readings><m:timeStamp>{end.isoformat()}</m:timeStamp>"
                f'<m:value>{total}</m:value><m:ReadingType ref="{RT_A_PLUS_TOTAL}"/>'
                "</m:Readings>"
            )
            written += 1
        out.write("</m:MeterReading>")
    out.write(f"</m:MeterReadings></Payload></{root}>\n")
    return written


def meter_readings_bytes(
    meters: Sequence[str], start: datetime, intervals: int, **kwargs: object
) -> bytes:
    import io

    buf = io.StringIO()
    write_meter_readings(buf, meters, start, intervals, **kwargs)  # type: ignore[arg-type]
    return buf.getvalue().encode()


# -- master data messages (CIS side) ----------------------------------------------------


def _request(
    verb: str, noun: str, payload: etree._Element, style: Style, message_id: str | None
) -> bytes:
    from cim_schemas.envelope import Header, render_request

    header = Header(
        verb=verb,
        noun=noun,
        timestamp=datetime.now(UTC),
        source="amihub-samples",
        message_id=message_id or str(uuid.uuid4()),
    )
    return render_request(header, None, payload, style=style)


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
