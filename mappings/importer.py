"""Apply a file with an inbound mapping to the meter data store, all or nothing.

::

    result = import_file(uow_factory, ImportFile(path, mapping="wide-15min-de",
                                                 utility="DEMO"), catalog)
    if not result.applied:
        print(result.report())

The whole file goes into one unit of work (one transaction). It is committed
only if every line was read, no reading occurs twice, and every meter is known
(or the mapping's ``policy.unknown_meters = "skip"`` lets the readings of
known meters through, the rest reported line by line). A problem with the file
as a whole (encoding, empty, not well-formed XML) raises a
:class:`cim_schemas.errors.MessageRejected`; nothing is written then either.

Meters are staged by distinct meter, not by line: item ``n`` is the n-th
distinct meter of the file, so memory grows with the number of meters, never
with the number of lines. A meter named by usage point is resolved to the
device installed there at the reading's time.

The readings go to the store as every other writer's do: one
:class:`mdm.commands.StoreMeterReadings` through the bus, its feed this file
(:class:`_FileFeed`, read in chunks). How the store writes them is its own choice
(adapters/sql/ingest.py): it may read the file twice (a large file of new
readings is first copied straight into the readings table; if a reading is stored
already or repeats, that is undone and the file read again through the exact
staged path), so ``progress`` may start again from byte 0. The result is the same
either way.
"""

from __future__ import annotations

import io
import operator
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import groupby
from pathlib import Path
from typing import IO, Any, Protocol

from cim_schemas.errors import ConfigurationError
from mappings.csv_reader import read_csv, read_csv_events
from mappings.load import Catalog
from mappings.rows import (
    UNKNOWN_METER,
    UNKNOWN_USAGE_POINT,
    Batch,
    EventBatch,
    LineError,
    MeterKey,
    SourceRow,
)
from mappings.spec import CodeTable, CsvEventsSpec, CsvSpec, XmlEventsSpec, XmlSpec
from mappings.xml_reader import read_xml, read_xml_events
from mdm.commands import StoreMeterReadings
from mdm.handling import CommandBus, HandlerContext
from mdm.model import DeviceRef, EndDeviceEvent, IngestStats
from mdm.ports import (
    MeterItem,
    ReadingBlock,
    ReadingFeedChunk,
    StagingResult,
    UnitOfWork,
    UnitOfWorkFactory,
)

DEFAULT_MAX_ERRORS = 1000
DUPLICATE = "2004"
#: Readings per reader batch. Small batches keep few rows alive at a time, so
#: fewer of them outlive the young GC generations (full collections are the
#: import's largest hidden cost in a big process).
IMPORT_BATCH = 250

_new_tuple = tuple.__new__
_reading = operator.itemgetter(3, 4, 5)  # SourceRow -> (ts, value, quality)
_meter_type = operator.itemgetter(1, 2)  # SourceRow -> (meter, reading type)


@dataclass(frozen=True)
class ImportFile:
    """Command: apply one file with a named inbound mapping for a utility."""

    path: Path
    mapping: str
    utility: str
    source: str = "cli"


@dataclass(frozen=True)
class ImportProgress:
    bytes_read: int
    lines: int
    readings: int
    errors: int


ProgressCallback = Callable[[ImportProgress], None]


class _CountingReader(io.RawIOBase):
    """Counts the bytes read from the file (for progress)."""

    def __init__(self, source: IO[bytes]) -> None:
        super().__init__()
        self._source = source
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._source.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.count += n
        return n


@dataclass(frozen=True)
class UnknownMeter:
    meter: MeterKey
    first_line: int
    last_line: int
    readings: int
    code: str = UNKNOWN_METER
    reason: str = ""

    def as_error(self) -> LineError:
        what = self.reason or f"unknown {self.meter}"
        more = (
            f" ({self.readings} readings on lines {self.first_line}-{self.last_line})"
            if self.readings > 1
            else ""
        )
        return LineError(self.first_line, None, self.code, f"{what}{more}")


@dataclass(frozen=True)
class DuplicateInFile:
    meter: MeterKey
    reading_type: str
    ts: datetime
    count: int

    def as_error(self) -> LineError:
        return LineError(
            0,
            None,
            DUPLICATE,
            f"{self.meter}: reading type {self.reading_type} at "
            f"{self.ts.isoformat()} occurs {self.count} times in the file",
        )


@dataclass(frozen=True)
class ImportResult:
    name: str
    mapping: str
    applied: bool
    lines: int  # data lines (CSV) or records (XML) read
    readings: int  # readings read from the file
    stats: IngestStats = field(default_factory=IngestStats)
    errors: tuple[LineError, ...] = ()  # the first ``max_errors`` line errors
    error_count: int = 0  # all line errors, also those not kept
    unknown_meters: tuple[UnknownMeter, ...] = ()
    skipped_readings: int = 0  # readings of unknown meters left out (policy skip)
    duplicates: tuple[DuplicateInFile, ...] = ()

    @property
    def status(self) -> str:
        if self.applied:
            return "applied with skipped meters" if self.skipped_readings else "applied"
        return "rejected"

    def all_errors(self) -> list[LineError]:
        """Line errors, then unknown meters (by first line), then duplicates."""
        out = list(self.errors)
        out += [u.as_error() for u in self.unknown_meters]
        out += [d.as_error() for d in self.duplicates]
        return out

    def report(self) -> str:
        """A plain-text report (the SFTP result and error files)."""
        lines = [
            f"file: {self.name}",
            f"mapping: {self.mapping}",
            f"status: {self.status}",
            f"lines: {self.lines}",
            f"readings: {self.readings}",
            f"stored: {self.stats.stored}",
            f"superseded: {self.stats.superseded}",
            f"unchanged: {self.stats.unchanged}",
            f"skipped: {self.skipped_readings}",
            f"errors: {self.error_count + len(self.unknown_meters) + len(self.duplicates)}",
        ]
        lines += [f"  [{e.code}] {e}" for e in self.all_errors()]
        if self.error_count > len(self.errors):
            lines.append(f"  ... {self.error_count - len(self.errors)} more line errors")
        return "\n".join(lines) + "\n"


@dataclass(slots=True)  # one per meter of the file: kept small
class _MeterSeen:
    item: int
    meter: MeterKey
    first: int
    last: int
    count: int = 0


@dataclass
class _Resolver:
    """MeterKey -> staging item; usage points -> the device installed at the time."""

    uow: UnitOfWork
    utility_id: int
    items: dict[DeviceRef, _MeterSeen] = field(default_factory=dict)
    unresolved: dict[tuple[MeterKey, str], _MeterSeen] = field(default_factory=dict)
    by_item: list[_MeterSeen] = field(default_factory=list)  # item n at n - 1
    _up_devices: dict[DeviceRef, list[tuple[int, datetime, datetime | None]] | None] = field(
        default_factory=dict
    )
    _mrids: dict[int, str] = field(default_factory=dict)

    def item_for(
        self,
        row: SourceRow,
        staging_meters: list[tuple[int, DeviceRef]],
        count: int = 1,
        last_line: int = 0,
    ) -> int | None:
        """The item of ``row``'s meter; ``count`` rows of the same device meter up to
        ``last_line`` may be counted at once (usage points are resolved row by row)."""
        ref: DeviceRef | None
        if row.meter.kind == "device":
            ref = row.meter.ref
        else:
            ref = self._device_at(row.meter.ref, row.ts)
            if ref is None:
                self._unresolved(
                    row,
                    "usage point"
                    if row.meter.ref not in self._up_devices
                    or self._up_devices[row.meter.ref] is None
                    else "installation",
                )
                return None
        seen = self.items.get(ref)
        if seen is None:
            meter = row.meter if row.meter.kind == "device" else MeterKey("device", ref)
            seen = _MeterSeen(len(self.items) + 1, meter, row.line, row.line)
            self.items[ref] = seen
            self.by_item.append(seen)
            staging_meters.append((seen.item, ref))
        seen.last = last_line or row.line
        seen.count += count
        return seen.item

    def _unresolved(self, row: SourceRow, why: str) -> None:
        key = (row.meter, why)
        seen = self.unresolved.get(key)
        if seen is None:
            seen = _MeterSeen(0, row.meter, row.line, row.line)
            self.unresolved[key] = seen
        seen.last = row.line
        seen.count += 1

    def _device_at(self, up: DeviceRef, ts: datetime) -> DeviceRef | None:
        if up not in self._up_devices:
            found = self.uow.usage_points.find(self.utility_id, up)
            if found is None or found.id is None:
                self._up_devices[up] = None
            else:
                self._up_devices[up] = self.uow.installations.devices_at(found.id, None, None)
        spans = self._up_devices[up]
        if spans is None:
            return None
        for device_id, start, end in spans:
            if start < ts and (end is None or ts <= end):  # (start, end], as the store
                mrid = self._mrids.get(device_id)
                if mrid is None:
                    history = self.uow.installations.history(device_id)
                    if not history:
                        return None
                    mrid = self._mrids[device_id] = history[0].device_mrid
                return DeviceRef(mrid=mrid)
        return None

    def unresolved_meters(self) -> list[UnknownMeter]:
        out = []
        for (meter, why), seen in self.unresolved.items():
            if why == "usage point":
                out.append(
                    UnknownMeter(meter, seen.first, seen.last, seen.count, UNKNOWN_USAGE_POINT)
                )
            else:
                out.append(
                    UnknownMeter(
                        meter,
                        seen.first,
                        seen.last,
                        seen.count,
                        UNKNOWN_METER,
                        f"no meter installed at {meter} at the reading's time",
                    )
                )
        return out


def read_file(
    spec: CsvSpec | XmlSpec,
    source: IO[bytes],
    tables: Mapping[str, CodeTable],
    batch_size: int = IMPORT_BATCH,
) -> Iterator[Batch]:
    """The streaming reader for the spec's kind."""
    if isinstance(spec, CsvSpec):
        return read_csv(spec, source, tables=tables, batch_size=batch_size)
    return read_xml(spec, source, tables=tables, batch_size=batch_size)


def _blocks(
    rows: list[SourceRow], resolver: _Resolver, new_meters: list[tuple[int, DeviceRef]]
) -> list[ReadingBlock]:
    """The batch's readings in blocks of consecutive rows of one meter and ReadingType;
    device meters are resolved a run at a time, usage points row by row (by time)."""
    out: list[ReadingBlock] = []
    new = _new_tuple
    for (meter, rt), group in groupby(rows, _meter_type):
        if meter.kind == "device":
            run = list(group)
            item = resolver.item_for(run[0], new_meters, len(run), run[-1][0])
            if item is not None:
                out.append(new(ReadingBlock, (item, rt, list(map(_reading, run)))))
            continue
        for row in group:
            item = resolver.item_for(row, new_meters)
            if item is not None:
                out.append(new(ReadingBlock, (item, rt, [(row[3], row[4], row[5])])))
    return out


class _LinesRefused(Exception):
    """The file has line errors: it is refused whole (read to the end to report them)."""


class _FileFeed:
    """A file's readings as a :class:`mdm.ports.ReadingFeed`: chunks of a reader batch,
    each with the meters seen first in it. Reading it again (a seekable source) starts
    from the beginning with a new resolver, so items are numbered the same way; the
    counts, line errors and resolver are those of the last reading. A file with line
    errors yields no readings and raises :class:`_LinesRefused` at its end."""

    def __init__(
        self,
        uow: UnitOfWork,
        utility_id: int,
        spec: CsvSpec | XmlSpec,
        source: IO[bytes],
        tables: Mapping[str, CodeTable],
        *,
        max_errors: int,
        batch_size: int,
        progress: ProgressCallback | None,
    ) -> None:
        self._uow = uow
        self._utility_id = utility_id
        self._spec = spec
        self._source = source
        self._tables = tables
        self._max_errors = max_errors
        self._batch_size = batch_size
        self._progress = progress
        self._start = source.tell() if source.seekable() else None
        self._opened = False
        #: usage points are resolved through the unit of work while the file is read
        self.queries_store = spec.meter.by == "usage_point"
        self._reset()

    def _reset(self) -> None:
        self.resolver = _Resolver(self._uow, self._utility_id)
        self.errors: list[LineError] = []
        self.error_count = 0
        self.lines = 0
        self.readings = 0

    @property
    def rereadable(self) -> bool:
        return self._start is not None

    def open(self) -> Iterator[ReadingFeedChunk]:
        if self._opened:
            if self._start is None:
                raise RuntimeError("this file can be read once")
            self._source.seek(self._start)
            self._reset()
        self._opened = True
        return self._chunks()

    def _chunks(self) -> Iterator[ReadingFeedChunk]:
        counted = _CountingReader(self._source)
        source = io.BufferedReader(counted, 1 << 16)
        progress, max_errors = self._progress, self._max_errors
        for batch in read_file(self._spec, source, self._tables, self._batch_size):
            self.lines += batch.lines
            self.readings += len(batch.rows)
            if batch.errors:
                self.error_count += len(batch.errors)
                self.errors.extend(batch.errors[: max(0, max_errors - len(self.errors))])
            if progress is not None:
                progress(ImportProgress(counted.count, self.lines, self.readings, self.error_count))
            if self.error_count:
                continue  # the file will be refused: keep reading only to report every line
            new_meters: list[tuple[int, DeviceRef]] = []
            blocks = _blocks(batch.rows, self.resolver, new_meters)
            yield ReadingFeedChunk(blocks, [MeterItem(item, ref) for item, ref in new_meters])
        if self.error_count:
            raise _LinesRefused


def import_stream(
    uow: UnitOfWork,
    spec: CsvSpec | XmlSpec,
    source: IO[bytes],
    *,
    bus: CommandBus,
    utility: str,
    tables: Mapping[str, CodeTable],
    name: str = "<stream>",
    actor: str = "import",
    max_errors: int = DEFAULT_MAX_ERRORS,
    batch_size: int = IMPORT_BATCH,
    progress: ProgressCallback | None = None,
) -> ImportResult:
    """Stage and apply one file inside ``uow``; the caller commits if ``result.applied``.

    The readings go to the store through ``bus`` (:class:`mdm.commands.StoreMeterReadings`);
    the store may read ``source`` twice when it is seekable. ``progress`` is called after
    every batch with the bytes, lines and readings read so far (for a progress bar:
    compare ``bytes_read`` with the file size).
    """
    found = uow.utilities.get(utility)
    if found is None or found.id is None:
        raise ConfigurationError(f"unknown utility {utility!r}")
    feed = _FileFeed(
        uow,
        found.id,
        spec,
        source,
        tables,
        max_errors=max_errors,
        batch_size=batch_size,
        progress=progress,
    )
    try:
        outcome: StagingResult = bus.handle(
            StoreMeterReadings(found.id, feed),
            uow,
            HandlerContext(actor, datetime.now(UTC), _source(actor)),
        )
    except _LinesRefused:
        return ImportResult(
            name,
            spec.name,
            applied=False,
            lines=feed.lines,
            readings=feed.readings,
            errors=tuple(feed.errors),
            error_count=feed.error_count,
        )
    resolver = feed.resolver
    by_item = {seen.item: seen for seen in resolver.items.values()}
    unknown = [
        UnknownMeter(by_item[i].meter, by_item[i].first, by_item[i].last, by_item[i].count)
        for i in sorted(set(outcome.unknown_items))
    ]
    unknown += resolver.unresolved_meters()
    unknown.sort(key=lambda u: u.first_line)
    skipped = sum(u.readings for u in unknown)
    applied = not outcome.duplicates and (not unknown or spec.policy.unknown_meters == "skip")
    duplicates = tuple(
        DuplicateInFile(by_item[d.item].meter, d.reading_type, d.ts, d.count)
        for d in outcome.duplicates
    )
    return ImportResult(
        name,
        spec.name,
        applied=applied,
        lines=feed.lines,
        readings=feed.readings,
        stats=outcome.stats if applied else IngestStats(),
        unknown_meters=tuple(unknown),
        skipped_readings=skipped if applied else 0,
        duplicates=duplicates,
    )


def _source(actor: str) -> str:
    """The ingest source of a mapped file: its SFTP partner's (``sftp:user``), else import."""
    return "sftp" if actor.startswith("sftp:") else "import"


def import_file(
    uow_factory: UnitOfWorkFactory,
    command: ImportFile,
    catalog: Catalog,
    *,
    bus: CommandBus,
    max_errors: int = DEFAULT_MAX_ERRORS,
    progress: ProgressCallback | None = None,
) -> ImportResult:
    """Apply ``command.path`` in one transaction; commit only if the result is applied.

    ``progress`` may start again from byte 0 when the store reads the file a second
    time (see the module's docstring)."""
    spec = catalog.inbound(command.mapping)
    with command.path.open("rb") as source, uow_factory() as uow:
        result = import_stream(
            uow,
            spec,
            source,
            bus=bus,
            utility=command.utility,
            tables=catalog.tables,
            name=command.path.name,
            actor=command.source,
            max_errors=max_errors,
            progress=progress,
        )
        if result.applied:
            uow.commit()
        else:
            uow.rollback()
    return result


# --------------------------------------------------------------------------- events


@dataclass(frozen=True)
class EventImportResult:
    name: str
    mapping: str
    applied: bool
    lines: int
    events: int  # events read from the file
    stored: int = 0
    errors: tuple[LineError, ...] = ()
    error_count: int = 0
    unknown_meters: tuple[UnknownMeter, ...] = ()
    skipped_events: int = 0

    @property
    def status(self) -> str:
        if self.applied:
            return "applied with skipped meters" if self.skipped_events else "applied"
        return "rejected"

    def report(self) -> str:
        lines = [
            f"file: {self.name}",
            f"mapping: {self.mapping}",
            f"status: {self.status}",
            f"lines: {self.lines}",
            f"events: {self.events}",
            f"stored: {self.stored}",
            f"skipped: {self.skipped_events}",
            f"errors: {self.error_count + len(self.unknown_meters)}",
        ]
        lines += [f"  [{e.code}] {e}" for e in self.errors]
        lines += [f"  [{u.code}] {u.as_error()}" for u in self.unknown_meters]
        if self.error_count > len(self.errors):
            lines.append(f"  ... {self.error_count - len(self.errors)} more line errors")
        return "\n".join(lines) + "\n"


def read_events(
    spec: CsvEventsSpec | XmlEventsSpec,
    source: IO[bytes],
    tables: Mapping[str, CodeTable],
    batch_size: int,
) -> Iterator[EventBatch]:
    """The streaming event reader for the spec's kind (``csv-events`` / ``xml-events``)."""
    if isinstance(spec, CsvEventsSpec):
        return read_csv_events(spec, source, tables=tables, batch_size=batch_size)
    return read_xml_events(spec, source, tables=tables, batch_size=batch_size)


def import_events_stream(
    uow: UnitOfWork,
    spec: CsvEventsSpec | XmlEventsSpec,
    source: IO[bytes],
    *,
    utility: str,
    tables: Mapping[str, CodeTable],
    name: str = "<stream>",
    max_errors: int = DEFAULT_MAX_ERRORS,
    batch_size: int = 5000,
) -> EventImportResult:
    """Store a file's end device events inside ``uow``; the caller commits if applied."""
    found = uow.utilities.get(utility)
    if found is None or found.id is None:
        raise ConfigurationError(f"unknown utility {utility!r}")
    mrids: dict[DeviceRef, str | None] = {}
    unknown: dict[MeterKey, _MeterSeen] = {}
    errors: list[LineError] = []
    error_count = lines = events = stored = skipped = 0
    skip_unknown = spec.policy.unknown_meters == "skip"
    for batch in read_events(spec, source, tables, batch_size):
        lines += batch.lines
        events += len(batch.rows)
        if batch.errors:
            error_count += len(batch.errors)
            errors.extend(batch.errors[: max(0, max_errors - len(errors))])
        new = list({r.meter.ref for r in batch.rows if r.meter.ref not in mrids})
        if new:
            devices = uow.devices.find_many(found.id, new)
            for ref in new:
                device = devices.get(ref)
                mrids[ref] = device.mrid if device is not None else None
        keep: list[EndDeviceEvent] = []
        for r in batch.rows:
            mrid = mrids[r.meter.ref]
            if mrid is None:
                seen = unknown.get(r.meter)
                if seen is None:
                    seen = unknown[r.meter] = _MeterSeen(0, r.meter, r.line, r.line)
                seen.last = r.line
                seen.count += 1
                continue
            keep.append(
                EndDeviceEvent(mrid, r.event_type, r.ts, reason=r.reason, severity=r.severity)
            )
        if error_count or (unknown and not skip_unknown):
            continue  # refused: keep reading to report every line
        stored += uow.events.add_many(found.id, keep)
    unknown_list = tuple(UnknownMeter(s.meter, s.first, s.last, s.count) for s in unknown.values())
    skipped = sum(u.readings for u in unknown_list)
    applied = not error_count and (not unknown_list or skip_unknown)
    return EventImportResult(
        name,
        spec.name,
        applied=applied,
        lines=lines,
        events=events,
        stored=stored if applied else 0,
        errors=tuple(errors),
        error_count=error_count,
        unknown_meters=unknown_list,
        skipped_events=skipped if applied else 0,
    )


class AppliedFile(Protocol):
    """What :func:`apply_file` returns: an ImportResult or an EventImportResult."""

    @property
    def applied(self) -> bool: ...

    def report(self) -> str: ...


def apply_file(
    uow_factory: UnitOfWorkFactory,
    command: ImportFile,
    catalog: Catalog,
    *,
    bus: CommandBus,
    max_errors: int = DEFAULT_MAX_ERRORS,
) -> ImportResult | EventImportResult:
    """Apply a file with its mapping: readings (``csv``/``xml``, through ``bus``) or end
    device events (``csv-events``/``xml-events``)."""
    spec = catalog.specs.get(command.mapping)
    if not isinstance(spec, CsvEventsSpec | XmlEventsSpec):
        return import_file(uow_factory, command, catalog, bus=bus, max_errors=max_errors)
    with command.path.open("rb") as source, uow_factory() as uow:
        result = import_events_stream(
            uow,
            spec,
            source,
            utility=command.utility,
            tables=catalog.tables,
            name=command.path.name,
            max_errors=max_errors,
        )
        if result.applied:
            uow.commit()
        else:
            uow.rollback()
    return result
