"""UTC offsets of a time zone over a span, as rows a query can join.

Set-based SQL finds a reading's local weekday and time of day by joining its instant
to the span of constant offset that holds it (``lo <= epoch < hi``). SQLite knows no
time zones; PostgreSQL would, but one path serves both stores.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import NamedTuple
from zoneinfo import ZoneInfo

HOUR = 3600


class OffsetSpan(NamedTuple):
    lo: int  # epoch seconds, inclusive
    hi: int  # epoch seconds, exclusive
    offset: int  # seconds east of UTC


def _offset(zone: ZoneInfo, epoch: int) -> int:
    off = datetime.fromtimestamp(epoch, UTC).astimezone(zone).utcoffset()
    assert off is not None
    return int(off.total_seconds())


def offset_spans(zone: ZoneInfo, start: datetime, end: datetime) -> list[OffsetSpan]:
    """Spans of constant UTC offset covering ``[start - 1 day, end + 1 day)``; each change
    found to the second (looked for hourly, then bisected)."""
    lo = int((start - timedelta(days=1)).timestamp()) // HOUR * HOUR
    hi = int((end + timedelta(days=1)).timestamp()) // HOUR * HOUR + HOUR
    spans: list[OffsetSpan] = []
    span_lo, current = lo, _offset(zone, lo)
    t = lo
    while t < hi:
        nxt = min(t + HOUR, hi)
        off = _offset(zone, nxt) if nxt < hi else current
        if off != current:
            a, b = t, nxt  # the change is in (a, b]
            while b - a > 1:
                mid = (a + b) // 2
                if _offset(zone, mid) == current:
                    a = mid
                else:
                    b = mid
            spans.append(OffsetSpan(span_lo, b, current))
            span_lo, current = b, off
        t = nxt
    spans.append(OffsetSpan(span_lo, hi, current))
    return spans
