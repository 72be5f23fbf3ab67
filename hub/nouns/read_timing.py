"""When a MeterReadSchedule runs: its TimeSchedule read as a stored read schedule.

A TimeSchedule is *stored* (a read schedule in the head-end job table) when it has a
recurrence (``recurrencePeriod`` seconds and/or ``recurrencePattern``) or its
``scheduleInterval/start`` is in the future; otherwise the read happens now, as it
always did (:mod:`hub.nouns.meter_read_schedule`).

A stored schedule runs at ``start``, then every period while the run time is not
after ``scheduleInterval/end`` (no end: until cancelled); without a recurrence it
runs once, at ``start``. Each run reads the window that ends at its run time (taken
down to a quarter-hour) and is one period long (no recurrence: 24 hours, like a read
now). ``recurrencePattern`` is a subset of the iCalendar RRULE (RFC 5545):
``FREQ=MINUTELY|HOURLY|DAILY|WEEKLY`` with an optional ``INTERVAL=n``, in UTC; with
``recurrencePeriod`` too, both must say the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from cim_schemas.profiles.meter_read_schedule import TimeSchedule
from hub.errors import ErrorDetail

#: the shortest period: one load profile interval
MIN_PERIOD: Final = 900
DEFAULT_WINDOW: Final = timedelta(hours=24)
_FREQ: Final = {"MINUTELY": 60, "HOURLY": 3600, "DAILY": 86400, "WEEKLY": 7 * 86400}


@dataclass(frozen=True)
class Timing:
    start: datetime
    end: datetime | None
    period: int | None  # seconds
    pattern: str | None

    @property
    def window_seconds(self) -> int:
        return self.period or int(DEFAULT_WINDOW.total_seconds())


def is_stored(ts: TimeSchedule, now: datetime) -> bool:
    start = ts.schedule_interval.start if ts.schedule_interval is not None else None
    return bool(
        ts.recurrence_period is not None
        or (ts.recurrence_pattern or "").strip()
        or (start is not None and start > now)
    )


def pattern_seconds(pattern: str) -> int:
    """The period of an RRULE subset; ValueError naming what is not understood."""
    parts: dict[str, str] = {}
    for item in pattern.strip().removeprefix("RRULE:").split(";"):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{item!r} is not NAME=VALUE")
        parts[key.strip().upper()] = value.strip().upper()
    freq = parts.pop("FREQ", None)
    if freq not in _FREQ:
        raise ValueError(f"FREQ must be one of {', '.join(_FREQ)}")
    interval = parts.pop("INTERVAL", "1")
    if not interval.isdigit() or int(interval) < 1:
        raise ValueError(f"INTERVAL {interval!r} is not a positive whole number")
    if parts:
        raise ValueError(f"{', '.join(sorted(parts))} not supported (FREQ and INTERVAL only)")
    return _FREQ[freq] * int(interval)


def parse_timing(ts: TimeSchedule, xpath: str) -> Timing | list[ErrorDetail]:
    """The timing of a stored schedule, or the errors (2013, 1011) with their xpaths."""
    errors: list[ErrorDetail] = []
    if ts.disabled:
        errors.append(
            ErrorDetail("1011", "a disabled TimeSchedule is not held", xpath=f"{xpath}/disabled")
        )
    if ts.offset:
        errors.append(
            ErrorDetail(
                "1011",
                "TimeSchedule offset is not supported: give scheduleInterval/start",
                xpath=f"{xpath}/offset",
            )
        )
    period: int | None = None
    if ts.recurrence_period is not None:
        p = ts.recurrence_period
        if p != p.to_integral_value() or p < MIN_PERIOD:
            errors.append(
                ErrorDetail(
                    "2013",
                    f"recurrencePeriod {p} must be whole seconds, at least {MIN_PERIOD}",
                    xpath=f"{xpath}/recurrencePeriod",
                )
            )
        else:
            period = int(p)
    pattern = (ts.recurrence_pattern or "").strip() or None
    if pattern is not None:
        try:
            from_pattern = pattern_seconds(pattern)
        except ValueError as exc:
            errors.append(
                ErrorDetail(
                    "2013",
                    f"recurrencePattern {pattern!r}: {exc}",
                    xpath=f"{xpath}/recurrencePattern",
                )
            )
        else:
            if from_pattern < MIN_PERIOD:
                errors.append(
                    ErrorDetail(
                        "2013",
                        f"recurrencePattern {pattern!r} repeats every {from_pattern} s, "
                        f"less than {MIN_PERIOD}",
                        xpath=f"{xpath}/recurrencePattern",
                    )
                )
            elif period is not None and period != from_pattern:
                errors.append(
                    ErrorDetail(
                        "2013",
                        f"recurrencePattern {pattern!r} ({from_pattern} s) and "
                        f"recurrencePeriod {period} s disagree",
                        xpath=f"{xpath}/recurrencePattern",
                    )
                )
            elif period is None and ts.recurrence_period is None:
                period = from_pattern
    interval = ts.schedule_interval
    start = interval.start if interval is not None else None
    end = interval.end if interval is not None else None
    if start is None:
        errors.append(
            ErrorDetail(
                "2013",
                "a recurring read schedule needs scheduleInterval/start (its first run)",
                xpath=f"{xpath}/scheduleInterval/start",
            )
        )
    elif end is not None and end <= start:
        errors.append(
            ErrorDetail(
                "2013",
                f"scheduleInterval end {end.isoformat()} is not after its start "
                f"{start.isoformat()}",
                xpath=f"{xpath}/scheduleInterval/end",
            )
        )
    if errors or start is None:
        return errors
    return Timing(start, end, period, pattern)
