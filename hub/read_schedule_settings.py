"""``[[hes.read_schedules]]``: standing reads defined in the configuration.

Each entry is a read schedule of the head-end job table (the same kind of row as a
recurring ``create MeterReadSchedule``), named by ``name`` (its TimeSchedule mRID,
stable across restarts). The scheduler service writes them to the table when it
starts (:mod:`hub.configured_schedules`); this module only checks them.

An entry that cannot work is refused when the settings are read, with the entry's
name in the message (``hes.read_schedules.0: read schedule 'daily': time_zone
'Europe/Berln' is not a known IANA time zone``). Whether its areas and meters exist
can only be checked against the store: the scheduler service does that when it starts.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Annotated, Any, Final, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    ValidatorFunctionWrapHandler,
    model_validator,
)

from cim_schemas.codes.reading_type import ReadingType
from hub.named_entries import unique_names, validate_named
from mdm.recurrence import Recurrence

DAY: Final = 86400
#: the shortest period and window: one load profile interval (as for MeterReadSchedule)
MIN_PERIOD: Final = 900
#: longest schedule name: the job table's mRID column
MAX_NAME: Final = 200


class ReadScheduleSettings(BaseModel):
    """One ``[[hes.read_schedules]]`` entry.

    Targets: ``all_meters`` (every meter of the utility that the head-end can reach),
    or ``areas`` (UsagePointGroups: transformer areas, their usage points' meters)
    and/or ``meters`` (meter mRIDs). What is read: the registers, the load profile of
    the window and the window's meter events, as a MeterReadSchedule run reads them;
    ``reading_types`` keeps only those types (none: all), ``events = false`` leaves the
    event log alone, ``window_seconds`` is the window (default: the period).

    When: ``period`` (seconds) or ``pattern`` (an iCalendar RRULE, RFC 5545 3.3.10,
    e.g. ``FREQ=DAILY``, ``FREQ=WEEKLY;BYDAY=MO,TH``, ``FREQ=MONTHLY;BYDAY=MO;BYSETPOS=-1``;
    :mod:`mdm.recurrence`), runs at least 900 s apart, period and FREQ x INTERVAL the
    same when both are given; the first run is at ``at`` (wall-clock time of day) in
    ``time_zone``. Daily and longer rules keep their wall-clock times across
    daylight-saving changes; hourly and shorter ones count elapsed seconds. ``start``
    (the day the runs count from; needed for a period of more than a day or one that
    does not divide a day) and ``end`` (no run after it); a ``start`` / ``end`` without
    offset is a wall-clock time in ``time_zone``, a date its midnight.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    #: utility code (default: the settings' ``default_utility``)
    utility: str | None = None
    all_meters: bool = False
    areas: tuple[str, ...] = ()
    meters: tuple[str, ...] = ()
    reading_types: tuple[str, ...] = ()
    events: bool = True
    window_seconds: int | None = None
    period: int | None = None
    pattern: str | None = None
    at: time = time(0, 0)
    time_zone: str = "UTC"
    start: datetime | date | None = None
    end: datetime | date | None = None

    @model_validator(mode="wrap")
    @classmethod
    def _named(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        """Every problem of an entry is reported with the entry's name."""
        return validate_named("read schedule", data, handler)

    @model_validator(mode="after")
    def _check(self) -> Self:
        problems: list[str] = []
        if not self.name.strip() or self.name != self.name.strip() or len(self.name) > MAX_NAME:
            problems.append(f"name must be 1 to {MAX_NAME} characters without outer blanks")
        if self.utility is not None and not self.utility.strip():
            problems.append("utility is empty")
        problems.extend(self._targets())
        problems.extend(self._what())
        problems.extend(self._when())
        if problems:  # (the wrap validator above does not see this one's errors)
            raise ValueError(f"read schedule {self.name!r}: {'; '.join(problems)}")
        return self

    # -- checks ------------------------------------------------------------------------------

    def _targets(self) -> list[str]:
        problems: list[str] = []
        if self.all_meters and (self.areas or self.meters):
            problems.append("all_meters reads every meter: leave out areas and meters")
        if not (self.all_meters or self.areas or self.meters):
            problems.append("no targets: give all_meters = true, areas or meters")
        for key, values in (("areas", self.areas), ("meters", self.meters)):
            if any(not v.strip() for v in values):
                problems.append(f"{key} has an empty name")
            twice = sorted({v for v in values if values.count(v) > 1})
            if twice:
                problems.append(f"{key} names {', '.join(twice)} twice")
        return problems

    def _what(self) -> list[str]:
        problems: list[str] = []
        for code in self.reading_types:
            try:
                ReadingType.parse(code)
            except ValueError as exc:
                problems.append(f"reading_types {code!r}: {exc}")
        if self.window_seconds is not None and (
            self.window_seconds < MIN_PERIOD or self.window_seconds % MIN_PERIOD
        ):
            problems.append(
                f"window_seconds {self.window_seconds} must be a whole number of quarter-hours "
                f"(a multiple of {MIN_PERIOD})"
            )
        return problems

    def _when(self) -> list[str]:
        problems: list[str] = []
        if self.period is None and not (self.pattern or "").strip():
            problems.append("no recurrence: give period (seconds) or pattern (FREQ=...)")
        if self.period is not None and self.period < MIN_PERIOD:
            problems.append(f"period {self.period} must be at least {MIN_PERIOD} seconds")
        try:
            zone: ZoneInfo | None = ZoneInfo(self.time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            zone = None
            problems.append(
                f"time_zone {self.time_zone!r} is not a known IANA time zone (e.g. Europe/Berlin)"
            )
        if (self.pattern or "").strip():
            from hub.nouns.read_timing import recurrence  # hub.nouns imports the settings

            try:
                recurrence(
                    self.pattern,
                    self.period,
                    (self.start_at if zone is not None else None)
                    or datetime(2000, 1, 3, tzinfo=UTC),
                    self.time_zone if zone is not None else "UTC",
                )
            except ValueError as exc:
                problems.append(f"pattern {self.pattern!r}: {exc}")
        if self.at.tzinfo is not None:
            problems.append("at is a wall-clock time: give its zone in time_zone")
        if problems or zone is None:
            return problems
        period = self.period_seconds
        if self.start is None and (period > DAY or DAY % period):
            how = "is longer than a day" if period > DAY else "does not divide a day"
            problems.append(f"a period of {period} s {how}: give start (the day runs count from)")
        start, end = self.start_at, self.end_at
        if start is not None and end is not None and end <= start:
            problems.append(f"end {end.isoformat()} is not after start {start.isoformat()}")
        return problems

    # -- derived -----------------------------------------------------------------------------

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    @property
    def period_seconds(self) -> int:
        """The period, or FREQ x INTERVAL of the pattern (:mod:`mdm.recurrence`)."""
        if self.period is not None:
            return self.period
        from hub.nouns.read_timing import pattern_seconds

        assert self.pattern is not None
        return pattern_seconds(self.pattern)

    def recurrence(self, first: datetime) -> Recurrence:
        """The runs of this entry counted from ``first`` (its DTSTART)."""
        from hub.nouns.read_timing import recurrence

        pattern = (self.pattern or "").strip() or None
        return recurrence(pattern, self.period, first, self.time_zone)

    @property
    def start_at(self) -> datetime | None:
        return _instant(self.start, self.zone)

    @property
    def end_at(self) -> datetime | None:
        return _instant(self.end, self.zone)

    @property
    def window(self) -> int:
        """Seconds each run reads back from its run time (default: the period)."""
        return self.window_seconds or self.period_seconds


def _instant(value: datetime | date | None, zone: ZoneInfo) -> datetime | None:
    """An aware instant: a date is its midnight, a naive time a wall-clock time in ``zone``."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        value = datetime.combine(value, time(0, 0))
    if value.tzinfo is None or value.utcoffset() is None:
        value = value.replace(tzinfo=zone)
    return value


#: the ``[hes] read_schedules`` list: entries checked, names unique
ReadSchedules = Annotated[
    list[ReadScheduleSettings], AfterValidator(unique_names("read schedule", "names are mRIDs"))
]
