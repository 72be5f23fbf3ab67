"""Stream a CSV file through a :class:`~mappings.spec.CsvSpec` into batches of readings.

Memory stays bounded: the file is decoded and split incrementally by the
``csv`` module, one batch at a time; only the repeated autumn hour of each
meter is remembered (see :class:`~mappings.rows.TimeResolver`).
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Callable, Iterator, Mapping, Sized
from datetime import timedelta
from decimal import Decimal
from typing import IO, Protocol, TypeVar
from zoneinfo import ZoneInfo

from mappings.rows import (
    BAD_FIELD,
    BAD_VALUE,
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
    batch = new_batch()
    seen_data = False
    while True:
        item = next_row()
        if item is None:
            break
        line, row = item
        seen_data = True
        batch.lines += 1
        if expected is None:
            expected = len(row)
        if len(row) != expected:
            batch.errors.append(
                LineError(line, None, BAD_FIELD, f"{len(row)} columns, expected {expected}")
            )
        else:
            engine.row(line, row, batch)
        if len(batch.rows) >= batch_size or len(batch.errors) >= batch_size:
            yield batch
            batch = new_batch()
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

    def _cell(self, row: list[str], index: int | None) -> str | None:
        if index is None:
            return None
        return row[index] if index < len(row) else ""

    def row(self, line: int, row: list[str], batch: Batch) -> None:
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
            self._wide(line, row, meter, rt, factor, batch)

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
            batch.rows.append(SourceRow(line, meter, rt, ts, value, quality))

    def _wide(
        self, line: int, row: list[str], meter: MeterKey, rt: str, factor: Decimal, batch: Batch
    ) -> None:
        assert self.spec.wide is not None
        errors = batch.errors
        try:
            day = parse_date(row[self.date_ix], self.spec.wide.date_format)
            start, end = day_bounds(day, self.zone)
        except FieldError as e:
            errors.append(LineError(line, self.cols.name(self.date_ix), e.code, e.message))
            return
        intervals = int((end - start) / self.step)
        room = (len(row) - self.first_ix) // self.stride
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
        offset = self.step if self.spec.wide.label == "end" else timedelta(0)
        out: list[SourceRow] = []
        n_err = len(errors)
        for i in range(room):
            index = self.first_ix + i * self.stride
            cell = row[index]
            if not cell.strip():
                continue
            if i >= intervals:
                errors.append(
                    LineError(
                        line,
                        self.cols.name(index),
                        BAD_FIELD,
                        f"a value after the last interval of {day} ({intervals} intervals in "
                        f"{self.spec.wide.timezone})",
                    )
                )
                continue
            try:
                value = self.parse_value(cell)
            except ValueError as e:
                errors.append(LineError(line, self.cols.name(index), BAD_VALUE, str(e)))
                continue
            if factor != 1:
                value = value * factor
            quality = ""
            if self.stride == 2:
                try:
                    quality = self.quality(row[index + 1] if index + 1 < len(row) else "")
                except FieldError as e:
                    errors.append(LineError(line, self.cols.name(index + 1), e.code, e.message))
                    continue
            out.append(SourceRow(line, meter, rt, start + i * self.step + offset, value, quality))
        if len(errors) == n_err:
            batch.rows.extend(out)
