"""Generated readings with faults planted at known places, for the validation tests.

Quarter-hour consumption (a delta profile) and a daily register at local midnight of
five meters of a utility in Europe/Berlin, over four weeks of history and the days
validated, which are daylight-saving days (29 March 2026: 92 quarter-hours; 25 October
2026: 100). The register is the running sum of the profile, so the two agree wherever
no fault was planted.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from mdm.model import DeviceRef
from mdm.ports import StagedReading, UnitOfWork
from mdm.qualities import Quality, pack

PROFILE = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
REGISTER = "0.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
BERLIN = ZoneInfo("Europe/Berlin")
Q = timedelta(minutes=15)
POWER_FAILURE = pack([Quality("1.2.32", comment="power failure")])


def local_midnight(day: date, zone: ZoneInfo = BERLIN) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)


def usual(ts: datetime, zone: ZoneInfo = BERLIN) -> Decimal:
    """A meter's usual quarter-hour by local time of day: 0.100 .. 0.475 kWh."""
    local = ts.astimezone(zone)
    return Decimal("0.100") + Decimal("0.025") * (local.hour % 16)


@dataclass
class Meter:
    mrid: str
    #: instant -> value (None: not stored) / quality, over the defaults
    values: dict[datetime, Decimal | None] = field(default_factory=dict)
    qualities: dict[datetime, str] = field(default_factory=dict)
    register_start: Decimal = Decimal("1000.0")
    register_digits: int | None = None
    #: midnight -> what is added to the register shown (a register fault)
    registers: dict[datetime, Decimal] = field(default_factory=dict)


def rows(
    meter: Meter, item: int, start: datetime, end: datetime, zone: ZoneInfo = BERLIN
) -> Iterator[StagedReading]:
    """The meter's profile of (start, end] and its register at each local midnight."""
    total = meter.register_start
    ts = start + Q
    midnights = {local_midnight(start.astimezone(zone).date() + timedelta(days=n), zone)
                 for n in range(0, (end - start).days + 3)}  # fmt: skip
    if start in midnights:
        yield StagedReading(item, REGISTER, start, total, "")
    while ts <= end:
        value = meter.values[ts] if ts in meter.values else usual(ts, zone)
        if value is not None:
            yield StagedReading(item, PROFILE, ts, value, meter.qualities.get(ts, ""))
            total += value
        if ts in midnights:
            shown = total
            if meter.register_digits is not None:
                shown = total % (Decimal(10) ** meter.register_digits)
            yield StagedReading(item, REGISTER, ts, shown + meter.registers.get(ts, 0), "")
        ts += Q


def store(
    uow: UnitOfWork,
    utility_id: int,
    meters: list[Meter],
    start: datetime,
    end: datetime,
    zone: ZoneInfo = BERLIN,
    extra: list[StagedReading] | None = None,
) -> int:
    """Store the meters' readings of (start, end] (``extra``: more rows of item n = the
    n-th meter)."""
    staging = uow.readings.staging()
    n = 0
    for item, meter in enumerate(meters, 1):
        staging.add_meter(item, DeviceRef(mrid=meter.mrid))
        batch = list(rows(meter, item, start, end, zone)) + [
            r for r in extra or [] if r.item == item
        ]
        n += len(batch)
        staging.add_readings(batch)
    result = staging.apply(utility_id)
    assert not result.unknown_items
    assert not result.duplicates
    return n
