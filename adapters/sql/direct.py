"""The optimistic bulk path: brand-new readings COPYed straight into ``reading``.

For a large import of new data (a month of a fleet, a backfill) the staged path
writes every row twice (COPY into a temporary table, then INSERT ... SELECT).
This path writes it once, and the server ingests a batch while Python parses
the next: per batch of complete MeterReadings it resolves the meters (one
query), checks that none of the batch's keys is stored (one index probe), and
COPYs the rows into ``reading`` with version 1.

It never merges: a stored key or a key repeated in the message raises
:class:`hub.errors.FastPathConflict`, the caller rolls the transaction back and
runs the exact staged path (versions, duplicates reported per item). So a
re-sent message costs one batch of wasted work, a new one half the writes.
PostgreSQL only; elsewhere :meth:`SqlReadingRepository.direct_writer` is None.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import psycopg

from adapters.sql.types import copy_text
from hub.errors import FastPathConflict, PermanentError, StoreUnavailable
from mdm.model import DeviceRef, IngestStats
from mdm.ports import ReadingBlock, StagedReading, StagingResult

if TYPE_CHECKING:
    from adapters.sql.readings import SqlReadingRepository
    from adapters.sql.uow import SqlUnitOfWork

_COPY = (
    "COPY reading (device_id, reading_type_id, ts, value, quality, version, recorded_at) FROM STDIN"
)


@dataclass(frozen=True)
class _Batch:
    blocks: list[ReadingBlock]
    meters: dict[int, DeviceRef]


class SqlDirectReadingWriter:
    def __init__(
        self, uow: SqlUnitOfWork, repo: SqlReadingRepository, utility_id: int, batch_rows: int
    ) -> None:
        from adapters.sql.registry import utcnow

        self._uow = uow
        self._repo = repo
        self._utility_id = utility_id
        self._batch_rows = batch_rows
        self._blocks: list[ReadingBlock] = []
        self._pending = 0  # readings in ``_blocks``
        self._meters: dict[int, DeviceRef] = {}
        self._unknown: list[int] = []
        self._stored = 0
        self._now = utcnow().isoformat()
        self._ts_cache: dict[datetime, str] = {}
        # batches are written by a background thread while the caller parses the next:
        # the server's work on one batch overlaps Python's on the next (its waits release
        # the GIL); at most two batches are queued, so memory stays bounded
        self._batches: queue.Queue[_Batch | None] = queue.Queue(maxsize=2)
        self._worker: threading.Thread | None = None
        self._failure: BaseException | None = None
        self._aborted = False

    @property
    def _raw(self) -> Any:
        return self._uow.connection.connection.driver_connection

    def add(self, blocks: Sequence[ReadingBlock], meters: Mapping[int, DeviceRef]) -> None:
        if self._failure is not None:  # stop reading the input: the batch already failed
            raise self._failure
        self._blocks.extend(blocks)
        self._pending += sum(len(b.readings) for b in blocks)
        self._meters.update(meters)
        if self._pending >= self._batch_rows:
            self._flush()

    def add_rows(self, rows: Sequence[StagedReading], meters: Mapping[int, DeviceRef]) -> None:
        blocks: list[ReadingBlock] = []
        last: tuple[int, str] | None = None
        current: list[tuple[datetime, Decimal, str]] = []
        for item, code, ts, value, quality in rows:
            if (item, code) != last:
                current = []
                blocks.append(ReadingBlock(item, code, current))
                last = (item, code)
            current.append((ts, value, quality))
        self.add(blocks, meters)

    def finish(self) -> StagingResult:
        self._flush()
        if self._worker is not None:
            self._batches.put(None)
            self._worker.join()
        if self._failure is not None:
            raise self._failure
        return StagingResult(IngestStats(stored=self._stored), unknown_items=sorted(self._unknown))

    def abort(self) -> None:
        self._aborted = True
        if self._worker is not None:
            self._batches.put(None)
            self._worker.join()
            self._worker = None

    # -- batches, written in the background -------------------------------------------------

    def _flush(self) -> None:
        blocks, meters = self._blocks, self._meters
        self._blocks, self._meters, self._pending = [], {}, 0
        if not blocks and not meters:
            return
        if self._worker is None:
            self._worker = threading.Thread(target=self._work, name="direct-writer", daemon=True)
            self._worker.start()
        self._batches.put(_Batch(blocks, meters))

    def _work(self) -> None:
        while (batch := self._batches.get()) is not None:
            if self._failure is None and not self._aborted:
                try:
                    self._write(batch.blocks, batch.meters)
                except BaseException as exc:  # re-raised in the caller's thread
                    self._failure = exc

    def _write(self, blocks: list[ReadingBlock], meters: dict[int, DeviceRef]) -> None:
        try:
            devices = self._resolve(meters)
            self._unknown.extend(sorted(i for i in meters if i not in devices))
            blocks = [b for b in blocks if b.item in devices and b.readings]
            if not blocks:
                return
            types = self._repo.register_types(sorted({b.reading_type for b in blocks}))
            self._refuse_stored_keys(blocks, devices, types)
            self._copy(blocks, devices, types)
        except psycopg.errors.UniqueViolation as exc:
            raise FastPathConflict(f"a key repeats in the message: {exc}") from exc
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise StoreUnavailable(f"store unavailable during bulk write: {exc}") from exc
        except psycopg.Error as exc:
            raise PermanentError(f"bulk write refused by the store: {exc}") from exc
        self._stored += sum(len(b.readings) for b in blocks)

    def _resolve(self, meters: Mapping[int, DeviceRef]) -> dict[int, int]:
        """item -> device id, for the meters that exist (mRID; else unique name or serial)."""
        mrids = sorted({r.mrid for r in meters.values() if r.mrid})
        names = sorted({r.name for r in meters.values() if not r.mrid and r.name})
        by_mrid: dict[str, int] = {}
        unique: dict[str, dict[str, int | None]] = {"name": {}, "serial_number": {}}
        with self._raw.cursor() as cur:
            if mrids:
                cur.execute(
                    "SELECT mrid, id FROM end_device WHERE utility_id = %s AND mrid = ANY(%s)",
                    (self._utility_id, mrids),
                )
                by_mrid = {m: int(i) for m, i in cur.fetchall()}
            if names:
                for column, found in unique.items():
                    cur.execute(
                        f"SELECT {column}, min(id), count(*) FROM end_device "
                        f"WHERE utility_id = %s AND {column} = ANY(%s) GROUP BY {column}",
                        (self._utility_id, names),
                    )
                    for key, first, count in cur.fetchall():
                        found[key] = int(first) if count == 1 else None
        out: dict[int, int] = {}
        for item, ref in meters.items():
            if ref.mrid:
                device = by_mrid.get(ref.mrid)
            else:  # as the staged path: a unique name, else a unique serial number
                name = ref.name or ""
                device = unique["name"].get(name) or unique["serial_number"].get(name)
            if device is not None:
                out[item] = device
        return out

    def _refuse_stored_keys(
        self, blocks: Sequence[ReadingBlock], devices: Mapping[int, int], types: Mapping[str, int]
    ) -> None:
        """Probe the primary key once per (meter, type) over that pair's own time range, so
        a file in time order (every meter in every batch) never trips on its own batches."""
        ranges: dict[tuple[int, int], tuple[datetime, datetime]] = {}
        for item, code, readings in blocks:
            key = (devices[item], types[code])
            lo = min(r[0] for r in readings)
            hi = max(r[0] for r in readings)
            known = ranges.get(key)
            ranges[key] = (min(lo, known[0]), max(hi, known[1])) if known else (lo, hi)
        keys = list(ranges)
        with self._raw.cursor() as cur:
            cur.execute(
                "SELECT 1 FROM unnest(%s::bigint[], %s::integer[], %s::timestamptz[], "
                "%s::timestamptz[]) AS k(device_id, reading_type_id, lo, hi) "
                "CROSS JOIN LATERAL (SELECT 1 FROM reading r WHERE r.device_id = k.device_id "
                "AND r.reading_type_id = k.reading_type_id AND r.ts >= k.lo AND r.ts <= k.hi "
                "LIMIT 1) hit LIMIT 1",
                (
                    [d for d, _ in keys],
                    [t for _, t in keys],
                    [ranges[k][0] for k in keys],
                    [ranges[k][1] for k in keys],
                ),
            )
            if cur.fetchone() is not None:
                raise FastPathConflict("some readings are stored already: merge them")

    def _copy(
        self, blocks: Sequence[ReadingBlock], devices: Mapping[int, int], types: Mapping[str, int]
    ) -> None:
        cache = self._ts_cache
        if len(cache) > 200_000:
            cache.clear()
        tail = f"\t1\t{self._now}\n"
        with self._raw.cursor() as cur, cur.copy(_COPY) as copy:
            lines: list[str] = []
            append = lines.append
            for item, code, readings in blocks:
                prefix = f"{devices[item]}\t{types[code]}\t"
                for ts, value, quality in readings:
                    stamp = cache.get(ts)
                    if stamp is None:
                        stamp = cache[ts] = ts.isoformat()
                    if quality:
                        quality = copy_text(quality)
                    append(f"{prefix}{stamp}\t{value}\t{quality}{tail}")
                if len(lines) >= 5_000:  # the server parses while Python formats
                    copy.write("".join(lines))
                    lines.clear()
            copy.write("".join(lines))
