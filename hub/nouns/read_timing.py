"""When a MeterReadSchedule runs: its TimeSchedule read as a stored read schedule.

A TimeSchedule is *stored* (a read schedule in the head-end job table) when it has a
recurrence (``recurrencePeriod`` seconds and/or ``recurrencePattern``) or its
``scheduleInterval/start`` is in the future; otherwise the read happens now, as it
always did (:mod:`hub.nouns.meter_read_schedule`).

A stored schedule runs at ``start``, then every period while the run time is not
after ``scheduleInterval/end`` (no end: until cancelled); without a recurrence it
runs once, at ``start``. Each run reads the window that ends at its run time (taken
down to a quarter-hour) and is one period long (no recurrence: 24 hours, like a read
now). ``recurrencePattern`` is an iCalendar RRULE (RFC 5545 3.3.10, all of it, e.g.
``FREQ=WEEKLY;BYDAY=MO,TH;BYHOUR=6``) counted from ``start`` in UTC
(:mod:`mdm.recurrence`); its period is FREQ x INTERVAL (a month 31 days). With
``recurrencePeriod`` too, both must say the same. Runs closer together than a
quarter-hour are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from cim_schemas.errors import ErrorDetail
from cim_schemas.profiles.meter_read_schedule import TimeSchedule
from mdm.recurrence import Recurrence

#: the shortest period: one load profile interval
MIN_PERIOD: Final = 900
DEFAULT_WINDOW: Final = timedelta(hours=24)
#: a first run for checking a pattern on its own (its period, its syntax)
_ANY_START: Final = datetime(2000, 1, 3, tzinfo=UTC)


@dataclass(frozen=True)
class Timing:
    start: datetime
    end: datetime | None
    period: int | None  # seconds
    pattern: str | None
    #: None: one run, at ``start``
    recurrence: Recurrence | None = None

    @property
    def window_seconds(self) -> int:
        return self.period or int(DEFAULT_WINDOW.total_seconds())

    @property
    def first_run(self) -> datetime | None:
        """The first run: ``start``, or the recurrence's first run at or after it."""
        return self.start if self.recurrence is None else self.recurrence.run(0)


def is_stored(ts: TimeSchedule, now: datetime) -> bool:
    start = ts.schedule_interval.start if ts.schedule_interval is not None else None
    return bool(
        ts.recurrence_period is not None
        or (ts.recurrence_pattern or "").strip()
        or (start is not None and start > now)
    )


def pattern_seconds(pattern: str) -> int:
    """The period (FREQ x INTERVAL) of an RRULE; ValueError naming what is wrong."""
    return Recurrence.parse(pattern, _ANY_START).nominal_seconds


def recurrence(
    pattern: str | None, period: int | None, start: datetime, zone: str = "UTC"
) -> Recurrence:
    """The runs of ``pattern`` (an RRULE) or of a fixed ``period`` (seconds) from
    ``start`` in ``zone``; ValueError naming what is wrong: a pattern not understood,
    runs closer than :data:`MIN_PERIOD`, a period that disagrees with the pattern."""
    if pattern is None:
        if period is None:
            raise ValueError("no recurrence: give a period or a pattern")
        if period < MIN_PERIOD:
            raise ValueError(f"period {period} must be at least {MIN_PERIOD} seconds")
        return Recurrence.every(period, start, zone)
    rule = Recurrence.parse(pattern, start, zone)
    seconds = rule.nominal_seconds
    if seconds < MIN_PERIOD:
        raise ValueError(f"repeats every {seconds} s, less than {MIN_PERIOD}")
    gap = rule.shortest_gap()
    if gap is not None and gap < MIN_PERIOD:
        raise ValueError(f"has runs {gap} s apart, less than {MIN_PERIOD}")
    if period is not None and period != seconds:
        raise ValueError(f"({seconds} s) and period {period} s disagree")
    if rule.run(0) is None:
        raise ValueError("has no run at or after its start")
    return rule


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
    interval = ts.schedule_interval
    start = interval.start if interval is not None else None
    end = interval.end if interval is not None else None
    runs: Recurrence | None = None
    if pattern is not None:
        try:
            runs = recurrence(pattern, period, start or _ANY_START)
        except ValueError as exc:
            errors.append(
                ErrorDetail(
                    "2013",
                    f"recurrencePattern {pattern!r}: {exc}",
                    xpath=f"{xpath}/recurrencePattern",
                )
            )
        else:
            pattern, period = runs.rule, runs.nominal_seconds
    elif period is not None:
        runs = recurrence(None, period, start or _ANY_START)
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
    if runs is not None:
        first = runs.run(0)
        if first is None or (end is not None and first > end):
            return [
                ErrorDetail(
                    "2013",
                    f"recurrencePattern {pattern!r} has no run between scheduleInterval "
                    "start and end",
                    xpath=f"{xpath}/recurrencePattern",
                )
            ]
    return Timing(start, end, period, pattern, runs)
