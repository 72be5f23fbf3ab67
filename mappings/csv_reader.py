"""Stream a CSV file through a :class:`~mappings.spec.CsvSpec` into batches of readings.

Memory stays bounded: the file is decoded and split incrementally by the
``csv`` module, one batch at a time; only the repeated autumn hour of each
meter is remembered (see :class:`~mappings.rows.TimeResolver`).
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import operator
from collections.abc import Callable, Iterator, Mapping, Sized
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import IO, Protocol, TypeVar
from zoneinfo import ZoneInfo

from mappings.rows import (
    BAD_FIELD,
    BAD_VALUE,
    CACHE_SIZE,
    METER_CACHE_SIZE,
    Batch,
    EventBatch,
    EventRow,
    EventTypeResolver,
    FieldError,
    FileRejected,
    LineError,
    MeterKey,
    MeterKeys,
    QualityResolver,
    ReadingTypeResolver,
    SourceRow,
    TimeResolver,
    UnitResolver,
    day_bounds,
    parse_date,
)
from mappings.spec import CodeTable, ColumnRef, CsvDialect, CsvEventsSpec, CsvSpec

DEFAULT_BATCH = 5000

_new_tuple = tuple.__new__  # NamedTuple(...) checks its arguments; this does not
#: Parsed values kept by text (interval values repeat; register values rarely do).
VALUE_CACHE_SIZE = 4096


def _encoding(name: str) -> str:
    canonical = codecs.lookup(name).name
    return "utf-8-sig" if canonical == "utf-8" else name


class _Columns:
    def __init__(self, header: list[str] | None) -> None:
        self.header = [h.strip() for h in header] if header is not None else None

    def index(self, ref: ColumnRef, header_line: int) -> int:
        if isinstance(ref, int):
            return ref - 1
        assert self.header is not None
        try:
            return self.header.index(ref.strip())
        except ValueError:
            raise FileRejected(
                f"line {header_line}: the header has no column {ref!r} "
                f"(columns: {', '.join(self.header)})"
            ) from None

    def name(self, index: int) -> str:
        if self.header is not None and index < len(self.header) and self.header[index]:
            return f"column {self.header[index]!r}"
        return f"column {index + 1}"


class _BatchLike(Protocol):
    @property
    def rows(self) -> Sized: ...

    errors: list[LineError]
    lines: int


B = TypeVar("B", bound=_BatchLike)
B_in = TypeVar("B_in", bound=_BatchLike, contravariant=True)


class _Engine(Protocol[B_in]):
    def row(self, line: int, row: list[str], batch: B_in) -> None: ...


def read_csv(
    spec: CsvSpec,
    source: IO[bytes],
    *,
    tables: Mapping[str, CodeTable],
    batch_size: int = DEFAULT_BATCH,
) -> Iterator[Batch]:
    """Yield batches of rows and per-line errors; raise :class:`FileRejected` for the file."""

    def engine(cols: _Columns, header_line: int) -> _Engine[Batch]:
        return _RowEngine(spec, cols, header_line, tables)

    return _decoded(spec.csv, source, engine, Batch, batch_size)


def read_csv_events(
    spec: CsvEventsSpec,
    source: IO[bytes],
    *,
    tables: Mapping[str, CodeTable],
    batch_size: int = DEFAULT_BATCH,
) -> Iterator[EventBatch]:
    """Yield batches of end device events and per-line errors (a ``csv-events`` file)."""

    def engine(cols: _Columns, header_line: int) -> _Engine[EventBatch]:
        return _EventEngine(spec, cols, header_line, tables)

    return _decoded(spec.csv, source, engine, EventBatch, batch_size)


def _decoded(
    d: CsvDialect,
    source: IO[bytes],
    engine: Callable[[_Columns, int], _Engine[B]],
    new_batch: Callable[[], B],
    batch_size: int,
) -> Iterator[B]:
    text = io.TextIOWrapper(source, encoding=_encoding(d.encoding), newline="")
    try:
        yield from _read(d, text, engine, new_batch, batch_size)
    except UnicodeDecodeError as exc:
        raise FileRejected(
            f"the file is not valid {d.encoding} text: {exc.reason} "
            f"(check the mapping's csv.encoding)"
        ) from exc
    finally:
        text.detach()


#: decoded characters split at a time by :func:`_data_rows`
SPLIT_BLOCK = 1 << 20


def _data_rows(
    d: CsvDialect, text: io.TextIOWrapper, reader: Iterator[list[str]], last_line: int
) -> Iterator[tuple[int, int, list[str]]]:
    """The rows after the header: (first line, last line, fields).

    Blocks of the decoded text that hold no quote character, lone CR or NUL are
    split with ``str.split`` (a row is a line; twice as fast as the csv module,
    the same fields); from the first block with one of them, the csv module
    reads the rest, as it read the header."""
    delimiter = d.delimiter
    quote = d.quotechar if d.quoting != "none" else ""
    line = last_line
    pending = ""
    while True:
        block = text.read(SPLIT_BLOCK)
        if not block:
            if pending:  # the last line has no line break
                block, pending = pending + "\n", ""
            else:
                return
        else:
            block = pending + block
        cut = block.rfind("\n") + 1
        head, pending = block[:cut], block[cut:]
        if "\r" in head:  # CRLF line ends; a lone CR would end a line for the csv module
            head = head.replace("\r\n", "\n")
            if "\r" in head:
                head = ""
        if not head or (quote and quote in head) or "\x00" in head:
            break
        for text_line in head[:-1].split("\n"):
            line += 1
            yield line, line, text_line.split(delimiter)
    # the csv module from here on: what was not split (its last line completed, so that
    # no line is cut in two), then the rest of the file
    rest = csv.reader(
        itertools.chain(io.StringIO(block + text.readline(), newline=""), text),
        delimiter=d.delimiter,
        quotechar=d.quotechar,
        quoting=csv.QUOTE_NONE if d.quoting == "none" else csv.QUOTE_MINIMAL,
        strict=True,
    )
    del reader  # the header's reader is done: it read line by line up to here
    start = line
    for row in rest:
        first, line = line + 1, start + rest.line_num
        yield first, line, row


def _read(
    d: CsvDialect,
    text: io.TextIOWrapper,
    make_engine: Callable[[_Columns, int], _Engine[B]],
    new_batch: Callable[[], B],
    batch_size: int,
) -> Iterator[B]:
    reader = csv.reader(
        text,
        delimiter=d.delimiter,
        quotechar=d.quotechar,
        quoting=csv.QUOTE_NONE if d.quoting == "none" else csv.QUOTE_MINIMAL,
        strict=True,
    )
    last_line = 0

    def next_row() -> tuple[int, list[str]] | None:
        nonlocal last_line
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return None
            except csv.Error as exc:
                raise FileRejected(f"line {last_line + 1}: not readable as CSV: {exc}") from exc
            start, last_line = last_line + 1, reader.line_num
            if row and "".join(row).strip():
                return start, row

    for _ in range(d.skip_lines):
        try:
            next(reader)
        except StopIteration:
            break
        last_line = reader.line_num
    header_line = 0
    header: list[str] | None = None
    if d.header:
        first = next_row()
        if first is None:
            raise FileRejected("empty file: no header and no data")
        header_line, header = first
    cols = _Columns(header)
    expected = d.columns or (len(header) if header is not None else None)
    engine = make_engine(cols, header_line)
    add = engine.row
    batch = new_batch()
    rows, errors, lines = batch.rows, batch.errors, 0
    seen_data = False
    try:
        for line, end, row in _data_rows(d, text, reader, last_line):
            last_line = end
            if not row or not (row[0].strip() or "".join(row).strip()):
                continue  # a blank line
            lines += 1
            if expected is None:
                expected = len(row)
            if len(row) != expected:
                errors.append(
                    LineError(line, None, BAD_FIELD, f"{len(row)} columns, expected {expected}")
                )
            else:
                add(line, row, batch)
            if len(rows) >= batch_size or len(errors) >= batch_size:
                batch.lines = lines
                yield batch
                batch = new_batch()
                rows, errors, lines = batch.rows, batch.errors, 0
                seen_data = True
    except csv.Error as exc:
        raise FileRejected(f"line {last_line + 1}: not readable as CSV: {exc}") from exc
    batch.lines = lines
    seen_data = seen_data or lines > 0
    if not seen_data:
        raise FileRejected("empty file: no data rows" + (" after the header" if header else ""))
    if len(batch.rows) or batch.errors or batch.lines:
        yield batch


class _EventEngine:
    def __init__(
        self,
        spec: CsvEventsSpec,
        cols: _Columns,
        header_line: int,
        tables: Mapping[str, CodeTable],
    ) -> None:
        def ix(ref: ColumnRef | None) -> int | None:
            return None if ref is None else cols.index(ref, header_line)

        self.cols = cols
        self.meter_ix = cols.index(spec.meter.column, header_line)
        self.ts_ix = cols.index(spec.timestamp.column, header_line)
        self.time_ix = ix(spec.timestamp.time_column)
        self.dst_ix = ix(spec.timestamp.dst_column)
        self.event_ix = cols.index(spec.event.column, header_line)
        self.reason_ix = ix(spec.event.reason_column)
        self.severity_ix = ix(spec.event.severity_column)
        self.meter_key = MeterKeys(spec.meter)
        self.event_type = EventTypeResolver(tables[spec.event.table] if spec.event.table else None)
        self.time = TimeResolver(spec.timestamp)

    @staticmethod
    def _opt(row: list[str], index: int | None) -> str | None:
        if index is None:
            return None
        return row[index].strip() or None

    def row(self, line: int, row: list[str], batch: EventBatch) -> None:
        n_err = len(batch.errors)
        meter = event = ts = None
        try:
            meter = self.meter_key(row[self.meter_ix])
        except FieldError as e:
            batch.errors.append(LineError(line, self.cols.name(self.meter_ix), e.code, e.message))
        try:
            event = self.event_type(row[self.event_ix])
        except FieldError as e:
            batch.errors.append(LineError(line, self.cols.name(self.event_ix), e.code, e.message))
        if meter is not None and event is not None:
            text = row[self.ts_ix]
            if self.time_ix is not None:
                text = f"{text.strip()} {row[self.time_ix].strip()}"
            try:
                ts = self.time.instant(
                    text, meter=meter, reading_type=event, flag=self._opt(row, self.dst_ix)
                )
            except FieldError as e:
                batch.errors.append(LineError(line, self.cols.name(self.ts_ix), e.code, e.message))
        if len(batch.errors) == n_err and meter is not None and event is not None and ts:
            batch.rows.append(
                EventRow(
                    line,
                    meter,
                    event,
                    ts,
                    self._opt(row, self.reason_ix),
                    self._opt(row, self.severity_ix),
                )
            )


class _RowEngine:
    def __init__(
        self, spec: CsvSpec, cols: _Columns, header_line: int, tables: Mapping[str, CodeTable]
    ) -> None:
        self.spec = spec
        self.cols = cols

        def ix(ref: ColumnRef) -> int:
            return cols.index(ref, header_line)

        self.meter_ix = ix(spec.meter.column)
        self.rt_ix = ix(spec.reading_type.column) if spec.reading_type.column is not None else None
        self.unit_ix = ix(spec.unit.column) if spec.unit else None
        self.q_ix = (
            ix(spec.quality.column) if spec.quality and spec.quality.column is not None else None
        )
        self.meter_key = MeterKeys(spec.meter)
        self.parse_value = spec.value.parser()
        self.reading_type = ReadingTypeResolver(spec.reading_type, tables)
        self.quality = QualityResolver(spec.quality)
        self.unit = UnitResolver(spec.unit)
        self.ts = spec.timestamp
        if spec.timestamp is not None:
            t = spec.timestamp
            self.ts_ix = ix(t.column)
            self.time_ix = ix(t.time_column) if t.time_column is not None else None
            self.dst_ix = ix(t.dst_column) if t.dst_column is not None else None
            assert spec.value.column is not None
            self.value_ix = ix(spec.value.column)
            self.time = TimeResolver(t)
        if spec.wide is not None:
            w = spec.wide
            self.date_ix = ix(w.date_column)
            self.first_ix = ix(w.first_column)
            self.zone = ZoneInfo(w.timezone)
            self.step = timedelta(minutes=w.interval_minutes)
            self.stride = 2 if w.flags == "after_each_value" else 1
        # Fast paths: every field through a cache hit or a plain parse; anything
        # else (a miss that fails, an error) goes the full way below, which reports.
        key_ix = [i for i in (self.meter_ix, self.rt_ix, self.unit_ix) if i is not None]
        self._key = operator.itemgetter(*key_ix)
        self._need = max(
            [*key_ix, *(i for i in (self.q_ix,) if i is not None)]
            + ([self.ts_ix, self.value_ix] if spec.timestamp is not None else [])
            + ([self.dst_ix] if spec.timestamp is not None and self.dst_ix is not None else [])
            + ([self.time_ix] if spec.timestamp is not None and self.time_ix is not None else [])
        )
        self._ids: dict[object, tuple[MeterKey, str, Decimal | None]] = {}
        self._values: dict[str, Decimal] = {}
        self._days: dict[str, tuple[date, list[datetime]]] = {}
        #: the per-row entry point (the _Engine protocol)
        self.row: Callable[[int, list[str], Batch], None] = self._make_fast()

    def _ids_of(self, row: list[str]) -> tuple[MeterKey, str, Decimal | None] | None:
        """(meter, reading type, unit factor or None for 1) of the row, or None if a
        field is wrong (the full path reports it)."""
        key = self._key(row)
        found = self._ids.get(key)
        if found is None:
            try:
                meter = self.meter_key(self._cell(row, self.meter_ix))
                rt = self.reading_type(self._cell(row, self.rt_ix))
                factor = self.unit(self._cell(row, self.unit_ix))
            except FieldError:
                return None
            if len(self._ids) >= METER_CACHE_SIZE:
                self._ids.clear()
            found = self._ids[key] = (meter, rt, None if factor == 1 else factor)
        return found

    def _make_fast(self) -> Callable[[int, list[str], Batch], None]:
        """The per-row function: cache hits and plain parses, all names local."""
        need = self._need
        key_of = self._key
        ids_get = self._ids.get
        ids_of = self._ids_of
        full = self._row_full
        if self.ts is None:
            wide = self._wide

            def fast_wide(line: int, row: list[str], batch: Batch) -> None:
                if len(row) <= need:
                    return full(line, row, batch)
                ids = ids_get(key_of(row)) or ids_of(row)
                if ids is None:
                    return full(line, row, batch)
                return wide(line, row, ids[0], ids[1], ids[2], batch)

            return fast_wide
        parse = self.parse_value  # no cache: one value per row, register values rarely repeat

        q_ix = self.q_ix
        q_get = self.quality.codes.get
        q_default: str | None = None  # the quality of rows without a quality column
        if q_ix is None:
            try:
                q_default = self.quality(None)
            except FieldError:
                q_default = None  # every row an error: the full path reports it
        value_ix, ts_ix, time_ix, dst_ix = self.value_ix, self.ts_ix, self.time_ix, self.dst_ix
        time = self.time
        times_get = time.cache.get
        new = _new_tuple
        ts_column = self.cols.name(ts_ix)

        def fast_long(line: int, row: list[str], batch: Batch) -> None:
            if len(row) <= need:
                return full(line, row, batch)
            ids = ids_get(key_of(row)) or ids_of(row)
            if ids is None:
                return full(line, row, batch)
            try:
                value = parse(row[value_ix])
            except ValueError:
                return full(line, row, batch)
            quality = q_get(row[q_ix]) if q_ix is not None else q_default
            if quality is None:
                return full(line, row, batch)
            meter, rt, factor = ids
            if factor is not None:
                value = value * factor
            text = row[ts_ix]
            if time_ix is not None:
                text = f"{text.strip()} {row[time_ix].strip()}"
            flag = row[dst_ix] if dst_ix is not None else None
            ts = times_get((text, flag))
            if ts is None:
                # last: resolving a repeated hour in "order" mode counts the occurrence
                try:
                    ts = time.instant(text, meter=meter, reading_type=rt, flag=flag)
                except FieldError as e:
                    batch.errors.append(LineError(line, ts_column, e.code, e.message))
                    return None
            batch.rows.append(new(SourceRow, (line, meter, rt, ts, value, quality)))
            return None

        return fast_long

    def _cell(self, row: list[str], index: int | None) -> str | None:
        if index is None:
            return None
        return row[index] if index < len(row) else ""

    def _row_full(self, line: int, row: list[str], batch: Batch) -> None:
        errors = batch.errors
        n_err = len(errors)
        meter: MeterKey | None = None
        rt = ""
        factor = None
        try:
            meter = self.meter_key(self._cell(row, self.meter_ix))
        except FieldError as e:
            errors.append(LineError(line, self.cols.name(self.meter_ix), e.code, e.message))
        try:
            rt = self.reading_type(self._cell(row, self.rt_ix))
        except FieldError as e:
            errors.append(LineError(line, self._name(self.rt_ix), e.code, e.message))
        try:
            factor = self.unit(self._cell(row, self.unit_ix))
        except FieldError as e:
            errors.append(LineError(line, self._name(self.unit_ix), e.code, e.message))
        if meter is None or len(errors) > n_err or factor is None:
            return
        if self.ts is not None:
            self._long(line, row, meter, rt, factor, batch)
        else:
            self._wide(line, row, meter, rt, None if factor == 1 else factor, batch)

    def _name(self, index: int | None) -> str | None:
        return self.cols.name(index) if index is not None else None

    def _long(
        self, line: int, row: list[str], meter: MeterKey, rt: str, factor: Decimal, batch: Batch
    ) -> None:
        errors = batch.errors
        n_err = len(errors)
        ts = None
        text = row[self.ts_ix]
        if self.time_ix is not None:
            text = f"{text.strip()} {row[self.time_ix].strip()}"
        try:
            ts = self.time.instant(
                text, meter=meter, reading_type=rt, flag=self._cell(row, self.dst_ix)
            )
        except FieldError as e:
            errors.append(LineError(line, self.cols.name(self.ts_ix), e.code, e.message))
        value = None
        try:
            value = self.parse_value(row[self.value_ix])
            if factor != 1:
                value = value * factor
        except ValueError as e:
            errors.append(LineError(line, self.cols.name(self.value_ix), BAD_VALUE, str(e)))
        quality = ""
        try:
            quality = self.quality(self._cell(row, self.q_ix))
        except FieldError as e:
            errors.append(LineError(line, self._name(self.q_ix), e.code, e.message))
        if len(errors) == n_err and ts is not None and value is not None:
            batch.rows.append(_new_tuple(SourceRow, (line, meter, rt, ts, value, quality)))

    def _day(self, text: str) -> tuple[date, list[datetime]]:
        """The local day of a date cell and the UTC instants of its values (cached)."""
        found = self._days.get(text)
        if found is None:
            assert self.spec.wide is not None
            day = parse_date(text, self.spec.wide.date_format)
            start, end = day_bounds(day, self.zone)
            offset = self.step if self.spec.wide.label == "end" else timedelta(0)
            step = self.step
            stamps = [start + i * step + offset for i in range(int((end - start) / step))]
            if len(self._days) >= CACHE_SIZE:
                self._days.clear()
            found = self._days[text] = (day, stamps)
        return found

    def _wide(
        self,
        line: int,
        row: list[str],
        meter: MeterKey,
        rt: str,
        factor: Decimal | None,
        batch: Batch,
    ) -> None:
        assert self.spec.wide is not None
        errors = batch.errors
        try:
            day, stamps = self._day(row[self.date_ix])
        except FieldError as e:
            errors.append(LineError(line, self.cols.name(self.date_ix), e.code, e.message))
            return
        intervals = len(stamps)
        stride = self.stride
        first = self.first_ix
        room = (len(row) - first) // stride
        if room < intervals:
            errors.append(
                LineError(
                    line,
                    None,
                    BAD_FIELD,
                    f"{day} has {intervals} intervals in {self.spec.wide.timezone} but the row "
                    f"has room for {room} values",
                )
            )
            return
        out: list[SourceRow] = []
        append = out.append
        new = _new_tuple
        n_err = len(errors)
        values = self._values
        cells = row[first : first + room * stride : stride]
        if stride == 1 and factor is None:  # the common case
            values_get = values.get
            for cell, stamp in zip(cells[:intervals], stamps, strict=True):
                value = values_get(cell)
                if value is None:
                    if not cell.strip():
                        continue  # a missing interval
                    try:
                        value = self.parse_value(cell)
                    except ValueError as e:
                        index = first + stamps.index(stamp)  # (an error: rare)
                        errors.append(LineError(line, self.cols.name(index), BAD_VALUE, str(e)))
                        continue
                    if len(values) >= VALUE_CACHE_SIZE:
                        values.clear()
                    values[cell] = value
                append(new(SourceRow, (line, meter, rt, stamp, value, "")))
        for i in range(0 if stride == 1 and factor is None else intervals):
            cell = cells[i]
            value = values.get(cell)
            if value is None:
                if not cell.strip():
                    continue  # a missing interval
                try:
                    value = self.parse_value(cell)
                except ValueError as e:
                    errors.append(
                        LineError(line, self.cols.name(first + i * stride), BAD_VALUE, str(e))
                    )
                    continue
                if len(values) >= VALUE_CACHE_SIZE:
                    values.clear()
                values[cell] = value
            if factor is not None:
                value = value * factor
            quality = ""
            if stride == 2:
                index = first + i * 2
                try:
                    quality = self.quality(row[index + 1] if index + 1 < len(row) else "")
                except FieldError as e:
                    errors.append(LineError(line, self.cols.name(index + 1), e.code, e.message))
                    continue
            append(new(SourceRow, (line, meter, rt, stamps[i], value, quality)))
        for i in range(intervals, room):
            if cells[i].strip():
                errors.append(
                    LineError(
                        line,
                        self.cols.name(first + i * stride),
                        BAD_FIELD,
                        f"a value after the last interval of {day} ({intervals} intervals in "
                        f"{self.spec.wide.timezone})",
                    )
                )
        if len(errors) == n_err:
            batch.rows.extend(out)
