"""The one recurrence model (mdm.recurrence): full RFC 5545 RRULEs through
dateutil.rrule, across daylight-saving days, its fast path equal to the plain one, and
the rows the scheduler reads (new and from before)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import islice

import pytest

from hub.headend_scheduler import next_due, recurrence_of, run_time
from hub.nouns.read_timing import recurrence
from mdm.hes_jobs import ACTIVE, HeadEndJob, JobKind
from mdm.recurrence import Recurrence

BERLIN = "Europe/Berlin"
# Europe/Berlin: 2026-03-29 02:00 CET -> 03:00 CEST; 2026-10-25 03:00 CEST -> 02:00 CET


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def runs(rule: Recurrence, n: int) -> list[datetime | None]:
    return [rule.run(i) for i in range(n)]


def test_weekdays_and_hours_in_local_time_across_the_spring_change() -> None:
    """Monday and Thursday at 06:00 Berlin time: a rule the old subset had no words for."""
    rule = Recurrence.parse(
        "FREQ=WEEKLY;BYDAY=MO,TH;BYHOUR=6;BYMINUTE=0;BYSECOND=0", datetime(2026, 3, 23), BERLIN
    )
    assert runs(rule, 4) == [
        utc(2026, 3, 23, 5),  # Monday 06:00 CET
        utc(2026, 3, 26, 5),  # Thursday 06:00 CET
        utc(2026, 3, 30, 4),  # Monday 06:00 CEST: the clocks changed on Sunday
        utc(2026, 4, 2, 4),
    ]


def test_the_last_monday_of_the_month_and_a_count() -> None:
    rule = Recurrence.parse(
        "FREQ=MONTHLY;BYDAY=MO;BYSETPOS=-1;COUNT=3", datetime(2026, 2, 1, 7, 0), BERLIN
    )
    assert runs(rule, 4) == [
        utc(2026, 2, 23, 6),  # 07:00 CET
        utc(2026, 3, 30, 5),  # 07:00 CEST
        utc(2026, 4, 27, 5),
        None,  # COUNT=3: over
    ]
    assert rule.nominal_seconds == 31 * 86400


def test_several_times_a_day_on_the_spring_day_never_run_twice_at_one_instant() -> None:
    """01:30, 02:30 and 03:30 every day: on 29 March 02:30 does not exist and is taken
    forward by the gap to 03:30 CEST, the same instant as 03:30: one run."""
    rule = Recurrence.parse("FREQ=DAILY;BYHOUR=1,2,3;BYMINUTE=30", datetime(2026, 3, 28), BERLIN)
    assert runs(rule, 6) == [
        utc(2026, 3, 28, 0, 30),
        utc(2026, 3, 28, 1, 30),
        utc(2026, 3, 28, 2, 30),
        utc(2026, 3, 29, 0, 30),  # 01:30 CET
        utc(2026, 3, 29, 1, 30),  # 02:30 -> 03:30 CEST, and 03:30 CEST: once
        utc(2026, 3, 29, 23, 30),  # 30 March 01:30 CEST
    ]


def test_the_repeated_autumn_hour_is_its_first_occurrence() -> None:
    rule = Recurrence.parse("FREQ=DAILY;BYHOUR=2;BYMINUTE=30", datetime(2026, 10, 24), BERLIN)
    assert runs(rule, 3) == [
        utc(2026, 10, 24, 0, 30),  # 02:30 CEST
        utc(2026, 10, 25, 0, 30),  # 02:30 CEST, the first of the two
        utc(2026, 10, 26, 1, 30),  # 02:30 CET
    ]


def test_hourly_rules_count_elapsed_time_through_the_repeated_hour() -> None:
    rule = Recurrence.parse("FREQ=HOURLY", datetime(2026, 10, 25, 1, 0), BERLIN)  # 01:00 CEST
    assert runs(rule, 4) == [
        utc(2026, 10, 24, 23),  # 01:00 CEST
        utc(2026, 10, 25, 0),  # 02:00 CEST
        utc(2026, 10, 25, 1),  # 02:00 CET: the repeated hour is read too
        utc(2026, 10, 25, 2),  # 03:00 CET
    ]


def test_until_and_a_start_that_does_not_match_the_rule() -> None:
    rule = Recurrence.parse(
        "FREQ=WEEKLY;BYDAY=FR;UNTIL=20260320T235959Z", utc(2026, 3, 4, 9), "UTC"
    )  # a Wednesday: DTSTART does not match, the first run is Friday
    assert runs(rule, 4) == [utc(2026, 3, 6, 9), utc(2026, 3, 13, 9), utc(2026, 3, 20, 9), None]


@pytest.mark.parametrize(
    "text",
    [
        "FREQ=MINUTELY;INTERVAL=15",
        "FREQ=HOURLY",
        "FREQ=HOURLY;INTERVAL=5;COUNT=40",
        "FREQ=SECONDLY;INTERVAL=3600",
    ],
)
@pytest.mark.parametrize("zone", ["UTC", BERLIN])
def test_the_fast_path_equals_dateutils_expansion(text: str, zone: str) -> None:
    """A plain sub-daily rule is start + n x period, computed; dateutil walks it."""
    rule = Recurrence.parse(text, datetime(2026, 10, 24, 22, 15), zone)
    assert rule._step() is not None  # the fast path is taken
    plain = list(islice(rule.runs(), 300))
    fast = [rule.run(n) for n in range(300)]
    assert fast[: len(plain)] == plain
    assert all(r is None for r in fast[len(plain) :])
    for moment in (utc(2026, 10, 25, 0, 7), utc(2026, 10, 26, 13), utc(2026, 10, 20)):
        found = rule.first_from(moment)
        expected = next(((n, at) for n, at in enumerate(plain) if at >= moment), None)
        assert found == expected
        later = rule.starting_from(moment)
        assert (later.run(0) if later else None) == (expected[1] if expected else None)


def test_refusals_name_what_is_wrong() -> None:
    start = utc(2026, 1, 5)
    for text, words in [
        ("FREQ=DAILY;INTERVAL=0", "INTERVAL '0' is not a positive whole number"),
        ("FREQ=DAILY;BYDAY=XX", "invalid 'BYDAY': XX"),
        ("FREQ=DAILY;UNTIL=20260301T000000", "UNTIL values must be specified in UTC"),
        ("FREQ=DAILY;FREQ=WEEKLY", "FREQ is given twice"),
        ("BYDAY=MO", "FREQ must be one of"),
    ]:
        with pytest.raises(ValueError, match=words):
            Recurrence.parse(text, start)
    with pytest.raises(ValueError, match="is not a known IANA time zone"):
        Recurrence.parse("FREQ=DAILY", start, "Europe/Berln")
    with pytest.raises(ValueError, match="runs 60 s apart"):
        recurrence("FREQ=DAILY;BYHOUR=6;BYMINUTE=0,1", None, start)
    with pytest.raises(ValueError, match="no run at or after its start"):
        recurrence("FREQ=DAILY;UNTIL=20260101T000000Z", None, start)


def test_what_is_accepted_today_keeps_its_runs() -> None:
    """Periods and the old FREQ/INTERVAL patterns: start + n x period in UTC, and whole
    days in the wall clock of the zone."""
    start = utc(2026, 3, 27, 12)
    assert runs(recurrence(None, 3600, start), 3) == [start + timedelta(hours=h) for h in range(3)]
    assert runs(recurrence("RRULE:FREQ=HOURLY;INTERVAL=6", None, start), 2) == [
        start,
        start + timedelta(hours=6),
    ]
    weekly = recurrence("freq=weekly", 7 * 86400, start)
    assert runs(weekly, 2) == [start, start + timedelta(days=7)]
    daily = recurrence(None, 86400, utc(2026, 3, 28, 0, 30), BERLIN)  # 01:30 CET
    assert runs(daily, 3) == [
        utc(2026, 3, 28, 0, 30),
        utc(2026, 3, 29, 0, 30),
        utc(2026, 3, 29, 23, 30),
    ]
    assert Recurrence.every(900, start).rule == "FREQ=MINUTELY;INTERVAL=15"
    assert Recurrence.every(2 * 86400, start).rule == "FREQ=DAILY;INTERVAL=2"


def row(spec: dict[str, object], **fields: object) -> HeadEndJob:
    values: dict[str, object] = {
        "utility_id": 1,
        "kind": JobKind.READ,
        "mrid": "S",
        "spec": {"utility": "U", "window_seconds": 86400, **spec},
        "targets": ("MTR-1",),
        "due_at": utc(2026, 3, 27, 5),
        "created_at": utc(2026, 3, 1),
        "state": ACTIVE,
        "start_at": utc(2026, 3, 26, 5),
    }
    values.update(fields)
    return HeadEndJob(**values)  # type: ignore[arg-type]


def test_the_scheduler_reads_stored_recurrences_and_rows_from_before() -> None:
    weekly = Recurrence.parse(
        "FREQ=WEEKLY;BYDAY=MO,TH;BYHOUR=6;BYMINUTE=0", datetime(2026, 3, 26), BERLIN
    )
    job = row({"recurrence": weekly.to_json()}, recurrence_seconds=7 * 86400)
    assert recurrence_of(job) == weekly
    assert run_time(job) == utc(2026, 3, 26, 5)
    assert next_due(job) == utc(2026, 3, 30, 4)  # Monday 06:00 CEST
    ending = replace_runs(job, 1, end_at=utc(2026, 4, 1))
    assert next_due(ending) is None  # Thursday 2 April is after the end
    # rows written before spec["recurrence"]: a period from start_at (UTC), or whole
    # days in the zone of their wall_clock
    hourly = row({}, recurrence_seconds=3600)
    assert (run_time(hourly, 2), next_due(hourly)) == (utc(2026, 3, 26, 7), utc(2026, 3, 26, 6))
    old_daily = row(
        {"wall_clock": {"zone": BERLIN, "at": "01:30:00", "day": "2026-03-28", "days": 1}},
        start_at=utc(2026, 3, 28, 0, 30),
        recurrence_seconds=86400,
        recurrence_pattern="FREQ=DAILY",
    )
    assert [run_time(old_daily, n) for n in range(3)] == [
        utc(2026, 3, 28, 0, 30),
        utc(2026, 3, 29, 0, 30),
        utc(2026, 3, 29, 23, 30),  # 01:30 CEST
    ]
    once = row({}, recurrence_seconds=None)
    assert (run_time(once), next_due(once)) == (once.start_at, None)


def replace_runs(job: HeadEndJob, runs: int, **fields: object) -> HeadEndJob:
    from dataclasses import replace

    return replace(job, runs=runs, **fields)  # type: ignore[arg-type]
