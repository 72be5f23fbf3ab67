"""When a configured read schedule runs (adapters.dlms.recurrence): the cases `make
mutate` found untested. docs/testing.md lists the mutants they kill.
"""

from __future__ import annotations

import time as clock
from collections.abc import Iterator
from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

import pytest

from adapters.dlms.recurrence import WallClock, first_run, local_instant

BERLIN = "Europe/Berlin"


@pytest.fixture
def host_in_new_york(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local zone is not UTC (as on a server configured for local time)."""
    monkeypatch.setenv("TZ", "America/New_York")
    clock.tzset()
    yield
    monkeypatch.undo()
    clock.tzset()


def test_a_period_must_be_positive() -> None:
    for period in (0, -60):
        with pytest.raises(ValueError, match=f"^period {period} is not positive$"):
            first_run(period, time(1, 30), BERLIN, datetime(2024, 6, 1, tzinfo=UTC))
    one = first_run(1, time(1, 30), BERLIN, datetime(2024, 6, 1, 0, 0, 0, 400, tzinfo=UTC))
    assert one.at == datetime(2024, 6, 1, 0, 0, 1, tzinfo=UTC)


def test_a_repeated_wall_clock_time_is_its_first_occurrence() -> None:
    repeated = time(2, 30, fold=1)  # 2024-10-27 02:30 happens twice in Berlin
    instant = local_instant(date(2024, 10, 27), repeated, ZoneInfo(BERLIN))
    assert instant == datetime(2024, 10, 27, 0, 30, tzinfo=UTC)
    assert instant.tzinfo is UTC


def test_runs_are_utc_and_in_the_schedule_zone_whatever_the_host_zone(
    host_in_new_york: None,
) -> None:
    # 23:00Z on June 1 is already June 2 in Berlin (and still June 1 in New York)
    not_before = datetime(2024, 6, 1, 23, 0, tzinfo=UTC)
    daily = first_run(86400, time(1, 30), BERLIN, not_before)
    assert daily.at == datetime(2024, 6, 1, 23, 30, tzinfo=UTC)
    assert daily.at.tzinfo is UTC
    # every 7000 s from 01:30 Berlin time on the local day of not_before
    odd = first_run(7000, time(1, 30), BERLIN, not_before)
    assert odd.at == datetime(2024, 6, 1, 23, 30, tzinfo=UTC)
    # every 90 minutes from 01:30 Berlin (23:30Z): 01:00Z is the first at or after 00:00Z
    ninety = first_run(5400, time(1, 30), BERLIN, datetime(2024, 6, 1, 0, 0, tzinfo=UTC))
    assert (ninety.at, ninety.period, ninety.wall_clock) == (
        datetime(2024, 6, 1, 1, 0, tzinfo=UTC),
        5400,
        None,
    )


def test_no_run_before_the_anchor_day_for_a_period_of_seconds() -> None:
    first = first_run(
        7200, time(1, 30), BERLIN, datetime(2024, 6, 1, 0, 0, tzinfo=UTC), date(2024, 6, 10)
    )
    assert first.at == datetime(2024, 6, 9, 23, 30, tzinfo=UTC)  # 01:30 CEST on June 10
    assert first.run(1) == datetime(2024, 6, 10, 1, 30, tzinfo=UTC)


def test_the_anchor_day_itself_runs_when_its_time_is_still_ahead() -> None:
    first = first_run(
        2 * 86400, time(1, 30), BERLIN, datetime(2024, 6, 1, 20, 0, tzinfo=UTC), date(2024, 6, 2)
    )
    assert first.at == datetime(2024, 6, 1, 23, 30, tzinfo=UTC)
    assert first.period == 2 * 86400
    assert first.wall_clock == WallClock(BERLIN, time(1, 30), date(2024, 6, 2), 2)
    days = first.wall_clock.to_json()["days"]
    assert days == 2
    assert type(days) is int
    assert first.run(1) == datetime(2024, 6, 3, 23, 30, tzinfo=UTC)
