"""When a configured read schedule runs: wall-clock days in a time zone, or elapsed seconds.

Pure functions without a clock (the caller passes "now"). A period of whole days runs
at the same wall-clock time of day in its zone (``01:30 Europe/Berlin`` stays 01:30
across daylight-saving changes: 23 or 25 hours apart on those days); any other period
counts elapsed seconds from the first run.

A wall-clock time that does not exist on a day (in the spring gap, e.g. 02:30 on the
day clocks go from 02:00 to 03:00) is taken forward by the gap (03:30); one that
happens twice (autumn) is its first occurrence. This is RFC 5545's rule (3.3.5) and
what ``zoneinfo`` does with ``fold=0``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

DAY: Final = 86400


def local_instant(day: date, at: time, zone: ZoneInfo) -> datetime:
    """The UTC instant of wall-clock ``at`` on ``day`` in ``zone`` (gap: forward; repeated:
    first)."""
    return datetime.combine(day, at.replace(tzinfo=None, fold=0), tzinfo=zone).astimezone(UTC)


@dataclass(frozen=True)
class WallClock:
    """Run ``n`` is at ``at`` in ``zone`` on ``day`` + ``n`` x ``days`` days."""

    zone: str
    at: time
    day: date  # the day of run 0
    days: int

    def run(self, n: int) -> datetime:
        return local_instant(self.day + timedelta(days=self.days * n), self.at, ZoneInfo(self.zone))

    def to_json(self) -> dict[str, Any]:
        return {
            "zone": self.zone,
            "at": self.at.isoformat(),
            "day": self.day.isoformat(),
            "days": self.days,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WallClock:
        return cls(
            str(data["zone"]),
            time.fromisoformat(str(data["at"])),
            date.fromisoformat(str(data["day"])),
            int(data["days"]),
        )


@dataclass(frozen=True)
class FirstRun:
    """The first run at or after a moment, and how later runs follow it: ``wall_clock``
    for a period of whole days, else every ``period`` seconds from ``at``."""

    at: datetime
    period: int
    wall_clock: WallClock | None

    def run(self, n: int) -> datetime:
        if self.wall_clock is not None:
            return self.wall_clock.run(n)
        return self.at + timedelta(seconds=self.period * n)


def first_run(
    period: int, at: time, zone: str, not_before: datetime, anchor_day: date | None = None
) -> FirstRun:
    """The first run at or after ``not_before`` of a series that runs every ``period``
    seconds at wall-clock ``at`` in ``zone``. ``anchor_day``: the local day the series
    counts from (no run before it); without it, a period of whole days is taken as one
    day and a shorter one counts from ``at`` on the local day of ``not_before``."""
    if period <= 0:
        raise ValueError(f"period {period} is not positive")
    tz = ZoneInfo(zone)
    today = not_before.astimezone(tz).date()
    if period % DAY == 0:
        days = period // DAY
        base = anchor_day if anchor_day is not None else today - timedelta(days=1)
        n = max(0, (today - base).days // days - 1)
        while local_instant(base + timedelta(days=days * n), at, tz) < not_before:
            n += 1
        wall = WallClock(zone, at, base + timedelta(days=days * n), days)
        return FirstRun(wall.run(0), period, wall)
    anchor = local_instant(anchor_day if anchor_day is not None else today, at, tz)
    steps = -((anchor - not_before) // timedelta(seconds=period))  # ceiling division
    if anchor_day is not None:
        steps = max(steps, 0)
    return FirstRun(anchor + timedelta(seconds=period * steps), period, None)
