"""When a read schedule runs: an RFC 5545 RRULE from a first run, in a time zone.

The one recurrence model of amihub, expanded by ``dateutil.rrule`` (the whole RRULE of
RFC 5545 3.3.10: FREQ, INTERVAL, COUNT, UNTIL, BYDAY, BYMONTHDAY, BYMONTH, BYYEARDAY,
BYWEEKNO, BYHOUR, BYMINUTE, BYSECOND, BYSETPOS, WKST). Used by ``create
MeterReadSchedule`` (``recurrencePattern`` / ``recurrencePeriod``), by
``[[hes.read_schedules]]`` (``pattern`` / ``period``) and by the scheduler, which asks
for run number ``n`` of a schedule's row.

How instants come out of a rule:

* FREQ=DAILY, WEEKLY, MONTHLY, YEARLY count in the wall clock of the zone: ``01:30
  Europe/Berlin`` stays 01:30 across daylight-saving changes (23 or 25 hours apart on
  those days). A wall-clock time that does not exist (the spring gap, e.g. 02:30 on
  the day clocks go from 02:00 to 03:00) is taken forward by the gap (03:30); one that
  happens twice (autumn) is its first occurrence (RFC 5545 3.3.5, ``fold=0``). Two
  runs that land on the same instant (02:30 and 03:30 on the spring day) are one run.
* FREQ=HOURLY, MINUTELY, SECONDLY count elapsed time from the first run (in UTC): an
  hourly read stays 3,600 s apart on the days the clocks change, and its BYHOUR /
  BYMINUTE parts are UTC. Times of day in a zone: FREQ=DAILY with BYHOUR / BYMINUTE.
* The first run (DTSTART) counts only if it matches the rule (dateutil's reading;
  RFC 5545 leaves an unsynchronised DTSTART undefined).

A fixed period in seconds (``recurrencePeriod``, ``period``) is the rule
:meth:`Recurrence.every` makes of it: whole days DAILY;INTERVAL=d (wall clock), else
HOURLY / MINUTELY / SECONDLY with the INTERVAL that gives the period (elapsed time).

Fast path: a sub-daily rule of FREQ and INTERVAL (and COUNT / UNTIL) only is
start + n x period, computed directly (a 15-minute schedule is at run 35,040 after a
year: dateutil would walk all of them); a test shows it equals dateutil's expansion.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from itertools import islice, pairwise
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil.rrule import rrule, rrulestr

DAY: Final = 86400
_SUB_DAILY: Final = frozenset({"HOURLY", "MINUTELY", "SECONDLY"})
#: the longest a FREQ unit lasts (a month of 31 days, a leap year): the nominal period
_UNIT: Final = {
    "YEARLY": 366 * DAY,
    "MONTHLY": 31 * DAY,
    "WEEKLY": 7 * DAY,
    "DAILY": DAY,
    "HOURLY": 3600,
    "MINUTELY": 60,
    "SECONDLY": 1,
}
_NAMES: Final = frozenset(
    {
        "FREQ",
        "INTERVAL",
        "COUNT",
        "UNTIL",
        "WKST",
        "BYSETPOS",
        "BYMONTH",
        "BYMONTHDAY",
        "BYYEARDAY",
        "BYWEEKNO",
        "BYDAY",
        "BYHOUR",
        "BYMINUTE",
        "BYSECOND",
    }
)
#: the parts of a rule the fast path computes (UNTIL takes the plain path)
_PLAIN: Final = frozenset({"FREQ", "INTERVAL", "COUNT"})


def zone_of(name: str) -> ZoneInfo:
    """The IANA zone ``name``; ValueError naming it if there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not a known IANA time zone (e.g. Europe/Berlin)") from None


def normalise(text: str) -> str:
    """The rule's ``NAME=VALUE`` parts, upper case, without an ``RRULE:`` prefix;
    ValueError naming what is not understood (before dateutil sees it)."""
    body = text.strip()
    if body.upper().startswith("RRULE:"):
        body = body[6:]
    parts: list[str] = []
    names: dict[str, str] = {}
    for item in body.split(";"):
        key, sep, value = item.partition("=")
        key, value = key.strip().upper(), value.strip().upper()
        if not sep or not key:
            raise ValueError(f"{item.strip()!r} is not NAME=VALUE")
        if key == "DTSTART" or key not in _NAMES:
            raise ValueError(f"{key} is not an RRULE part (RFC 5545 3.3.10)")
        if key in names:
            raise ValueError(f"{key} is given twice")
        names[key] = value
        parts.append(f"{key}={value}")
    if names.get("FREQ") not in _UNIT:
        raise ValueError(f"FREQ must be one of {', '.join(_UNIT)}")
    interval = names.get("INTERVAL", "1")
    if not interval.isdigit() or int(interval) < 1:
        raise ValueError(f"INTERVAL {interval!r} is not a positive whole number")
    if "COUNT" in names and "UNTIL" in names:
        raise ValueError("COUNT and UNTIL exclude each other")
    return ";".join(parts)


@dataclass(frozen=True)
class Recurrence:
    """Runs of ``rule`` (an RRULE body) from ``start`` (DTSTART), in ``zone``, without
    the first ``skip`` runs.

    ``start`` is the wall-clock time in ``zone`` (naive, its ``fold`` kept), so that a
    DTSTART of 02:30 on a day whose 02:30 does not exist still means 02:30 on the other
    days; ``skip`` lets a series start at a later run without moving its DTSTART
    (which would change what BY parts, COUNT and INTERVAL count from)."""

    rule: str
    start: datetime
    zone: str = "UTC"
    skip: int = 0

    @classmethod
    def parse(cls, text: str, start: datetime, zone: str = "UTC") -> Recurrence:
        """A checked recurrence; ValueError naming what is wrong. ``start``: an aware
        instant, or a naive wall-clock time in ``zone``."""
        tz = zone_of(zone)
        if start.tzinfo is not None:
            start = start.astimezone(tz).replace(tzinfo=None)
        recurrence = cls(normalise(text), start, zone)
        try:
            recurrence.expansion()
        except (ValueError, TypeError) as exc:
            raise ValueError(str(exc)) from None
        return recurrence

    @classmethod
    def every(cls, seconds: int, start: datetime, zone: str = "UTC") -> Recurrence:
        """A fixed period as a rule (module docstring)."""
        if seconds <= 0:
            raise ValueError(f"period {seconds} is not positive")
        for unit, name in ((DAY, "DAILY"), (3600, "HOURLY"), (60, "MINUTELY"), (1, "SECONDLY")):
            if seconds % unit == 0:
                return cls.parse(f"FREQ={name};INTERVAL={seconds // unit}", start, zone)
        raise AssertionError("unreachable")

    # -- the rule ----------------------------------------------------------------------------

    @property
    def parts(self) -> dict[str, str]:
        return dict(p.split("=", 1) for p in self.rule.split(";"))

    @property
    def sub_daily(self) -> bool:
        """Counted in elapsed time (module docstring), not in the zone's wall clock."""
        return self.parts["FREQ"] in _SUB_DAILY

    @property
    def nominal_seconds(self) -> int:
        """FREQ x INTERVAL in seconds (a month 31 days, a year 366): the default read
        window, so that runs of a rule with BY parts leave no interval unread."""
        return _UNIT[self.parts["FREQ"]] * int(self.parts.get("INTERVAL", "1"))

    @property
    def first_instant(self) -> datetime:
        """DTSTART as an instant (UTC)."""
        return self.start.replace(tzinfo=zone_of(self.zone)).astimezone(UTC)

    def expansion(self) -> rrule:
        """dateutil's rule, its DTSTART in UTC (elapsed) or in the zone (wall clock)."""
        if self.sub_daily:
            dtstart = self.first_instant
        else:
            dtstart = self.start.replace(tzinfo=zone_of(self.zone))
        rule = rrulestr(self.rule, dtstart=dtstart)
        assert isinstance(rule, rrule)
        return rule

    # -- runs --------------------------------------------------------------------------------

    def _step(self) -> timedelta | None:
        """The fixed step of a plain sub-daily rule (the fast path), else None."""
        if not self.sub_daily or set(self.parts) - _PLAIN:
            return None
        return timedelta(seconds=self.nominal_seconds)

    def runs(self) -> Iterator[datetime]:
        """The runs in order, as UTC instants (the plain expansion: no fast path)."""
        last: datetime | None = None
        for local in self.expansion():
            at = local.astimezone(UTC)
            if last is None or at > last:  # the spring gap can put two runs on one instant
                last = at
                yield at

    def run(self, n: int) -> datetime | None:
        """Run number ``n`` (0: the first after ``skip``); None once COUNT or UNTIL have
        ended the rule."""
        if n < 0:
            raise ValueError(f"run {n} is negative")
        step = self._step()
        if step is not None:
            return self._fixed(self.skip + n, step)
        return next(islice(self.runs(), self.skip + n, None), None)

    def _fixed(self, n: int, step: timedelta) -> datetime | None:
        count = self.parts.get("COUNT")
        if count is not None and n >= int(count):
            return None
        return self.first_instant + step * n

    def first_from(self, moment: datetime) -> tuple[int, datetime] | None:
        """The first run at or after ``moment``, with its number; None if none is left."""
        step = self._step()
        if step is not None:
            n = max(self.skip, -((self.first_instant - moment) // step))  # ceiling division
            at = self._fixed(n, step)
            return None if at is None else (n - self.skip, at)
        for n, at in enumerate(islice(self.runs(), self.skip, None)):
            if at >= moment:
                return n, at
        return None

    def starting_from(self, moment: datetime) -> Recurrence | None:
        """The same series from its first run at or after ``moment`` (that run becomes
        run 0); None if none is left."""
        found = self.first_from(moment)
        return None if found is None else replace(self, skip=self.skip + found[0])

    def shortest_gap(self, sample: int = 64) -> int | None:
        """The fewest seconds between two of the first ``sample`` runs (None: one run)."""
        step = self._step()
        if step is not None:
            return None if self.run(1) is None else int(step.total_seconds())
        runs = list(islice(self.runs(), self.skip, self.skip + sample))
        gaps = [int((b - a).total_seconds()) for a, b in pairwise(runs)]
        return min(gaps) if gaps else None

    # -- stored ------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """``start`` as the wall-clock time (``fold`` 1: the second of a repeated hour)."""
        return {
            "rule": self.rule,
            "start": self.start.isoformat(),
            "fold": self.start.fold,
            "zone": self.zone,
            "skip": self.skip,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Recurrence:
        start = datetime.fromisoformat(str(data["start"])).replace(fold=int(data.get("fold", 0)))
        return cls(str(data["rule"]), start, str(data["zone"]), int(data.get("skip", 0)))
