"""From what a meter answered to what the MDM stores: pure conversions.

* registers -> one reading each (kWh, ReadingType from the OBIS table);
* load profile (cumulative registers captured every 15 minutes) -> interval
  deltas in kWh (ReadingType of the 15-minute channel); an interval whose
  previous capture is missing has no delta;
* missing intervals of a window (detection for re-reads);
* (meter event codes -> CIM EndDeviceEvents: :mod:`hes.meter_events`);
* head-end quality codes (ReadingQualityType ``system.category.index``, system 2
  = head-end / MDC).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from cim_schemas.codes.reading_type import obis_to_reading_type
from hes.client.session import ProfileRow, RegisterValue

INTERVAL = timedelta(minutes=15)
KILO = Decimal(1000)

# head-end (system 2) and end-device (system 1) quality codes amihub sets
QUALITY_VALID = ""
QUALITY_POWER_DOWN = "1.2.32"  # end device: power down during the interval (profile status)
QUALITY_CLOCK_CHANGED = "1.4.9"  # end device: meter clock changed in the interval
QUALITY_TIME_QUESTIONABLE = "2.10.1"  # head-end: meter clock off by more than the tolerance
QUALITY_MISSING = "2.5.259"  # head-end: known missing read (reported, not stored)

STATUS_POWER_DOWN = 0x80
STATUS_CLOCK_ADJUSTED = 0x20


@dataclass(frozen=True)
class Reading:
    """One reading for the MDM: ReadingType code, UTC instant, kWh, quality codes."""

    reading_type: str
    ts: datetime
    value: Decimal
    quality: str = QUALITY_VALID


def _join(*codes: str) -> str:
    return ",".join(c for c in codes if c)


def register_readings(
    values: Sequence[RegisterValue], ts: datetime, quality: str = QUALITY_VALID
) -> list[Reading]:
    return [Reading(str(obis_to_reading_type(v.obis)), ts, v.value / KILO, quality) for v in values]


def profile_readings(
    columns: Sequence[str],
    rows: Iterable[ProfileRow],
    channels: Sequence[str] | None = None,
    quality: str = QUALITY_VALID,
) -> list[Reading]:
    """Interval deltas (kWh) from cumulative captures; needs the capture before each interval.

    ``channels`` (OBIS) limits the columns converted; None converts them all."""
    by_ts = {row.ts: row for row in rows}
    wanted = [
        (i, str(obis_to_reading_type(c, interval_minutes=15)))
        for i, c in enumerate(columns)
        if channels is None or c in channels
    ]
    out = []
    for ts in sorted(by_ts):
        previous = by_ts.get(ts - INTERVAL)
        if previous is None:
            continue
        row = by_ts[ts]
        codes = [quality]
        if row.status & STATUS_POWER_DOWN:
            codes.append(QUALITY_POWER_DOWN)
        if row.status & STATUS_CLOCK_ADJUSTED:
            codes.append(QUALITY_CLOCK_CHANGED)
        for i, rt in wanted:
            delta = (row.values[i] - previous.values[i]) / KILO
            out.append(Reading(rt, ts, delta, _join(*codes)))
    return out


def expected_intervals(start: datetime, end: datetime) -> list[datetime]:
    """Interval ends in (start, end], on the 15-minute grid."""
    first = start - timedelta(seconds=start.timestamp() % INTERVAL.total_seconds()) + INTERVAL
    out = []
    ts = first
    while ts <= end:
        out.append(ts)
        ts += INTERVAL
    return out


def missing_intervals(start: datetime, end: datetime, have: Iterable[datetime]) -> list[datetime]:
    got = set(have)
    return [ts for ts in expected_intervals(start, end) if ts not in got]


def contiguous_ranges(missing: Sequence[datetime]) -> list[tuple[datetime, datetime]]:
    """Runs of consecutive interval ends -> (first, last) pairs, for targeted re-reads."""
    runs: list[tuple[datetime, datetime]] = []
    for ts in sorted(missing):
        if runs and ts - runs[-1][1] == INTERVAL:
            runs[-1] = (runs[-1][0], ts)
        else:
            runs.append((ts, ts))
    return runs
