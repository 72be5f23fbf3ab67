"""The UTC offsets SQLite's spike rule joins (mdm/vee/zones.py): each change to the second."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from mdm.vee.zones import OffsetSpan, offset_spans


def epoch(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


def test_berlin_spring_and_autumn() -> None:
    spans = offset_spans(
        ZoneInfo("Europe/Berlin"),
        datetime(2026, 3, 28, tzinfo=UTC),
        datetime(2026, 10, 26, tzinfo=UTC),
    )
    assert spans == [
        OffsetSpan(epoch("2026-03-27T00:00"), epoch("2026-03-29T01:00"), 3600),
        OffsetSpan(epoch("2026-03-29T01:00"), epoch("2026-10-25T01:00"), 7200),
        OffsetSpan(epoch("2026-10-25T01:00"), epoch("2026-10-27T01:00"), 3600),
    ]


def test_sao_paulo_midnight_that_did_not_exist() -> None:
    """4 November 2018: 00:00 local (-03:00) became 01:00 (-02:00), at 03:00 UTC."""
    spans = offset_spans(
        ZoneInfo("America/Sao_Paulo"),
        datetime(2018, 11, 4, tzinfo=UTC),
        datetime(2018, 11, 5, tzinfo=UTC),
    )
    assert [(s.hi, s.offset) for s in spans[:-1]] == [(epoch("2018-11-04T03:00"), -10800)]
    assert spans[-1].offset == -7200
    assert spans[0].lo < epoch("2018-11-04T00:00") < spans[-1].hi


def test_zone_without_changes_is_one_span() -> None:
    spans = offset_spans(ZoneInfo("UTC"), datetime(2026, 1, 1, tzinfo=UTC),
                         datetime(2026, 2, 1, tzinfo=UTC))  # fmt: skip
    assert len(spans) == 1
    assert spans[0].offset == 0
