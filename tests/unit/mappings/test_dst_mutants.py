"""Local wall-clock time -> UTC (mappings.rows): the cases `make mutate` found untested.

Each test names the behaviour; docs/testing.md lists the mutants they kill.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from mappings.rows import BAD_TIMESTAMP, FieldError, MeterKey, TimeResolver, day_bounds
from mappings.spec import TimestampRules
from mdm.model import DeviceRef

BERLIN = "Europe/Berlin"
METER = MeterKey("device", DeviceRef(mrid="m1"))
REPEATED = "2024-10-27T02:30:00"  # happens twice in Berlin: 00:30Z (CEST) and 01:30Z (CET)
FIRST, SECOND = datetime(2024, 10, 27, 0, 30, tzinfo=UTC), datetime(2024, 10, 27, 1, 30, tzinfo=UTC)


@pytest.fixture
def host_in_new_york(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local zone is not UTC (as on a server configured for local time)."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def resolver(mode: str = "order", **flags: str) -> TimeResolver:
    rules = TimestampRules(timezone=BERLIN, repeated_hour=mode, dst_flags=flags)  # type: ignore[arg-type]
    return TimeResolver(rules)


def test_instants_are_utc_whatever_the_host_zone(host_in_new_york: None) -> None:
    order = resolver()
    flagged = resolver("flag", S="summer", W="winter")
    got = [
        order.instant("2024-06-01T12:00:00", meter=METER, reading_type="A"),
        order.instant("2024-06-01T12:00:00+02:00", meter=METER, reading_type="A"),
        order.instant(REPEATED, meter=METER, reading_type="A"),
        order.instant(REPEATED, meter=METER, reading_type="A"),
        flagged.instant(REPEATED, meter=METER, reading_type="A", flag="W"),
        *day_bounds(date(2024, 3, 31), ZoneInfo(BERLIN)),
    ]
    for instant in got:
        assert instant.tzinfo is UTC, instant
    assert got[2:5] == [FIRST, SECOND, SECOND]


def test_the_order_of_a_repeated_hour_counts_per_reading_type() -> None:
    order = resolver()
    for reading_type in ("A", "B"):
        assert order.instant(REPEATED, meter=METER, reading_type=reading_type) == FIRST
    for reading_type in ("A", "B"):
        assert order.instant(REPEATED, meter=METER, reading_type=reading_type) == SECOND


def test_refused_repeated_hour_says_why() -> None:
    with pytest.raises(FieldError) as caught:
        resolver("refuse").instant(REPEATED, meter=METER, reading_type="A")
    assert caught.value.code == BAD_TIMESTAMP
    assert caught.value.message == (
        "2024-10-27 02:30 occurs twice in Europe/Berlin (DST change) "
        "and the mapping refuses repeated hours"
    )


def test_missing_dst_flag_is_named() -> None:
    with pytest.raises(FieldError) as caught:
        resolver("flag", S="summer", W="winter").instant(REPEATED, meter=METER, reading_type="A")
    assert caught.value.code == BAD_TIMESTAMP
    assert caught.value.message == "DST flag '' is not one of ['S', 'W']"


def test_a_day_whose_midnight_does_not_exist_is_refused() -> None:
    # Brazil moved the clocks from 00:00 to 01:00 on 2018-11-04
    with pytest.raises(FieldError) as caught:
        day_bounds(date(2018, 11, 4), ZoneInfo("America/Sao_Paulo"))
    assert caught.value.code == BAD_TIMESTAMP
    assert caught.value.message == (
        "local midnight of 2018-11-04 does not exist in America/Sao_Paulo"
    )


def test_only_times_that_do_not_depend_on_the_meter_are_cached() -> None:
    order = resolver()
    plain = order.instant("2024-06-01T12:00:00", meter=METER, reading_type="A")
    assert plain == datetime(2024, 6, 1, 10, 0, tzinfo=UTC)
    assert order.cached("2024-06-01T12:00:00") == plain
    assert order.instant(REPEATED, meter=METER, reading_type="A") == FIRST
    assert order.cached(REPEATED) is None  # the next one is the later instant
    flagged = resolver("flag", S="summer", W="winter")
    assert flagged.instant(REPEATED, meter=METER, reading_type="A", flag="S") == FIRST
    assert flagged.cached(REPEATED, "S") == FIRST  # the flag decides: cached with it
