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
