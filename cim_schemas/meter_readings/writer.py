"""Writing flat readings as a MeterReadings profile: incrementally, or as a tree.

:func:`write_readings` writes rows (:class:`~cim_schemas.meter_readings.values.TextRow`:
meter, ReadingType, timestamp, value and quality as text, ordered by meter, ReadingType
and time) into an open lxml ``xmlfile``: per meter a MeterReading with an IntervalBlock
per interval ReadingType, its Meter, then its register Readings. Memory is bounded:
interval readings are written as they come (flushed every block and every 1,000
readings); only a meter's register readings wait, because the profile puts them after
its Meter element.

Its fast path: given ``raw``, the binary stream ``xf`` writes to, IntervalReadings
are written to it directly as text between flushes of ``xf`` (their text is ISO
timestamps, decimal numbers and escaped quality codes), several times faster than an
``xf.element`` per element; a reading whose qualities carry notes is written as
elements. Both give the same document (tests/unit/fuzz/test_meter_readings_codec.py).
:func:`render_readings` is the same answer as an element.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from contextlib import ExitStack
from decimal import Decimal
from functools import cache
from typing import IO, Any, Final
from xml.sax.saxutils import escape

from lxml import etree

from cim_schemas.codes.reading_type import ReadingType
from cim_schemas.meter_readings.values import QualityText
from cim_schemas.namespaces import profile_ns

NAMESPACE: Final = profile_ns("MeterReadings")
NS: Final = "{" + NAMESPACE + "}"
T_ROOT: Final = NS + "MeterReadings"
T_METER_READING: Final = NS + "MeterReading"
T_BLOCKS: Final = NS + "IntervalBlocks"
T_INTERVAL_READINGS: Final = NS + "IntervalReadings"
T_READINGS: Final = NS + "Readings"
T_TIME_STAMP: Final = NS + "timeStamp"
T_VALUE: Final = NS + "value"
T_QUALITIES: Final = NS + "ReadingQualities"
T_QUALITY_TYPE: Final = NS + "ReadingQualityType"
T_READING_TYPE: Final = NS + "ReadingType"
T_METER: Final = NS + "Meter"
T_MRID: Final = NS + "mRID"
T_REASON: Final = NS + "reason"
T_COMMENT: Final = NS + "comment"
T_SOURCE: Final = NS + "source"

#: a row to write: (meter mRID, ReadingType, timestamp, value, quality text)
Row = tuple[str, str, str, str, str]
#: raw readings written at once
_RAW_BATCH: Final = 1000
_QUOT: Final = {'"': "&quot;"}


def value_text(value: Decimal) -> str:
    """A decimal as the profile's ``value``: plain decimal text, never an exponent."""
    s = str(value)
    if "E" in s or "e" in s:
        s = format(value, "f")
    return s


@cache
def is_interval(code: str) -> bool:
    """Whether readings of this ReadingType go into IntervalBlocks (it has a measuring
    period) rather than register Readings."""
    try:
        rt = ReadingType.parse(code)
    except ValueError:
        return False
    return rt.measuring_period != 0


def write_readings(
    xf: Any,
    rows: Iterable[Row],
    qualities: QualityText,
    raw: IO[bytes] | None = None,
    *,
    prefix: str | None = None,
) -> int:
    """Write the MeterReadings element of ``rows`` into an open lxml ``xmlfile``;
    returns how many readings it holds. ``raw``: the stream ``xf`` writes to (the fast
    path, see the module). ``prefix``: the profile's namespace prefix (None: the
    default namespace)."""
    p = f"{prefix}:" if prefix else ""
    interval_open, interval_close = (
        f"<{p}IntervalReadings><{p}timeStamp>",
        f"</{p}IntervalReadings>",
    )
    value_open, value_close = f"</{p}timeStamp><{p}value>", f"</{p}value>"
    count = 0
    meter: str | None = None
    block_rt: str | None = None
    registers: list[Row] = []
    pending: list[str] = []
    marker = qualities.marker

    def drain() -> None:
        if pending:
            xf.flush()
            assert raw is not None
            raw.write("".join(pending).encode())
            pending.clear()

    with ExitStack() as outer, xf.element(T_ROOT, nsmap={prefix: NAMESPACE}):
        meter_ctx = ExitStack()
        block_ctx = ExitStack()
        outer.callback(meter_ctx.close)
        outer.callback(block_ctx.close)

        def close_block() -> None:
            nonlocal block_rt
            if block_rt is not None:
                drain()
                with xf.element(T_READING_TYPE, {"ref": block_rt}):
                    pass
                block_ctx.close()
                xf.flush()
                block_rt = None

        def close_meter() -> None:
            nonlocal meter
            close_block()
            if meter is not None:
                with xf.element(T_METER), xf.element(T_MRID):
                    xf.write(meter)
                for _, rt, ts, value, quality in registers:
                    with xf.element(T_READINGS):
                        reason = qualities.unpack(quality)[1] if marker in quality else None
                        if reason is not None:
                            with xf.element(T_REASON):
                                xf.write(reason)
                        with xf.element(T_TIME_STAMP):
                            xf.write(ts)
                        with xf.element(T_VALUE):
                            xf.write(value)
                        _write_qualities(xf, quality, qualities)
                        with xf.element(T_READING_TYPE, {"ref": rt}):
                            pass
                registers.clear()
                meter_ctx.close()
                meter = None

        interval = is_interval
        for row in rows:
            mrid, rt, ts, value, quality = row
            if mrid != meter:
                close_meter()
                meter = mrid
                meter_ctx.enter_context(xf.element(T_METER_READING))
            count += 1
            if rt != block_rt:
                if not interval(rt):
                    registers.append(row)
                    continue
                close_block()
                block_rt = rt
                block_ctx.enter_context(xf.element(T_BLOCKS))
            if raw is not None:
                if quality and marker in quality:  # qualities with their notes: as elements
                    drain()
                    _write_interval(xf, ts, value, quality, qualities)
                    xf.flush()
                    continue
                pending.append(
                    f"{interval_open}{ts}{value_open}{value}{value_close}"
                    + (_raw_qualities(quality, p) if quality else "")
                    + interval_close
                )
                if len(pending) >= _RAW_BATCH:
                    drain()
                continue
            _write_interval(xf, ts, value, quality, qualities)
            if count % _RAW_BATCH == 0:
                xf.flush()
        close_meter()
    return count


def render_readings(rows: Iterable[Row], qualities: QualityText) -> tuple[etree._Element, int]:
    """The MeterReadings element of ``rows`` (written as :func:`write_readings` writes
    it), and how many readings it holds."""
    out = io.BytesIO()
    xmlfile: Any = etree.xmlfile
    with xmlfile(out, encoding="UTF-8") as xf:
        count = write_readings(xf, rows, qualities, raw=out)
    return etree.fromstring(out.getvalue()), count


def _write_interval(xf: Any, ts: str, value: str, quality: str, qualities: QualityText) -> None:
    with xf.element(T_INTERVAL_READINGS):
        with xf.element(T_TIME_STAMP):
            xf.write(ts)
        with xf.element(T_VALUE):
            xf.write(value)
        _write_qualities(xf, quality, qualities)


def _raw_qualities(quality: str, p: str) -> str:
    return "".join(
        f'<{p}ReadingQualities><{p}ReadingQualityType ref="{escape(code, _QUOT)}"/>'
        f"</{p}ReadingQualities>"
        for code in quality.split(",")
        if code
    )


def _write_qualities(xf: Any, quality: str, qualities: QualityText) -> None:
    """ReadingQualities of a quality text: each with the comment, source and timeStamp
    it arrived with."""
    if qualities.marker not in quality:
        for code in quality.split(","):
            if code:
                with xf.element(T_QUALITIES), xf.element(T_QUALITY_TYPE, {"ref": code}):
                    pass
        return
    for q in qualities.unpack(quality)[0]:
        with xf.element(T_QUALITIES):
            for tag, text in (
                (T_COMMENT, q.comment),
                (T_SOURCE, q.source),
                (T_TIME_STAMP, q.time_stamp),
            ):
                if text is not None:
                    with xf.element(tag):
                        xf.write(text)
            with xf.element(T_QUALITY_TYPE, {"ref": q.code}):
                pass
