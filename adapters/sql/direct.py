"""The optimistic bulk path: brand-new readings COPYed straight into ``reading``.

For a large import of new data (a month of a fleet, a backfill) the staged path
writes every row twice (COPY into a temporary table, then INSERT ... SELECT).
This path writes it once, and the server ingests a batch while Python parses
the next: per batch of complete MeterReadings it resolves the new meters (one
query) and COPYs the rows into ``reading`` with version 1, in a background
thread.

It never merges, and it does not probe first: the primary key is the check. A
reading stored already (every stored key is in ``reading``, its earlier
versions in ``reading_history``) or repeated in the input makes the COPY fail
with a unique violation, raised as :class:`KeyConflict`; the store
(adapters/sql/ingest.py, the only user) rolls back to the savepoint it took before
and runs the exact staged path (versions, duplicates reported per item). So a
re-sent message costs at most one batch of wasted work, a new one half the
writes, and new readings between stored ones stay on this path. PostgreSQL only.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg

from adapters.sql.types import copy_text
from cim_schemas.errors import PermanentError, StoreUnavailable
from mdm.model import DeviceRef, IngestStats
from mdm.ports import ReadingBlock, StagingResult

if TYPE_CHECKING:
    from adapters.sql.readings import SqlReadingRepository
    from adapters.sql.uow import SqlUnitOfWork

_COPY = (
    "COPY reading (device_id, reading_type_id, ts, value, quality, version, recorded_at) FROM STDIN"
)


_RESOLVE = """
WITH m AS (SELECT unnest(%(m)s::text[]) AS v), n AS (SELECT unnest(%(n)s::text[]) AS v)
SELECT 'mrid', d.mrid, min(d.id), count(*) FROM m
  JOIN end_device d ON d.utility_id = %(u)s AND d.mrid = m.v GROUP BY d.mrid
UNION ALL
SELECT 'name', d.name, min(d.id), count(*) FROM n
  JOIN end_device d ON d.utility_id = %(u)s AND d.name = n.v GROUP BY d.name
UNION ALL
SELECT 'serial_number', d.serial_number, min(d.id), count(*) FROM n
  JOIN end_device d ON d.utility_id = %(u)s AND d.serial_number = n.v GROUP BY d.serial_number
"""


class KeyConflict(Exception):
    """A reading of the batch is stored already or repeats: nothing of the direct path
    is kept (adapters/sql/ingest.py rolls back to its savepoint and merges instead).
    Never leaves adapters/sql."""


class _Stamps(dict[datetime, str]):
    """Instant -> its COPY field with the tabs around it, made once per instant."""

    def __missing__(self, ts: datetime) -> str:
        text = self[ts] = f"\t{ts.isoformat()}\t"
        return text


class _Tails(dict[str, str]):
    """Quality -> the end of a COPY line (quality, version 1, recorded_at)."""

    def __init__(self, now: str) -> None:
        super().__init__()
        self._end = f"\t1\t{now}\n"

    def __missing__(self, quality: str) -> str:
        text = self[quality] = f"\t{copy_text(quality)}{self._end}"
        return text


#: starts every COPY line of a block until the block's device and type ids are known
_PREFIX = "\x00"  # PostgreSQL text never holds NUL, so the data cannot

#: a block as COPY text: (item, ReadingType code, lines starting with _PREFIX, readings)
_TextBlock = tuple[int, str, str, int]


@dataclass(frozen=True)
class _Batch:
    blocks: list[_TextBlock]
    meters: dict[int, DeviceRef]


class SqlDirectReadingWriter:
    def __init__(
        self,
        uow: SqlUnitOfWork,
        repo: SqlReadingRepository,
        utility_id: int,
        batch_rows: int,
        *,
        background: bool = True,
    ) -> None:
        from adapters.sql.registry import utcnow

        self._uow = uow
        self._repo = repo
        self._utility_id = utility_id
        self._batch_rows = batch_rows
        self._blocks: list[_TextBlock] = []
        self._pending = 0  # readings in ``_blocks``
        self._meters: dict[int, DeviceRef] = {}  # named since the last batch
        self._refs: dict[int, DeviceRef] = {}  # every item's meter named so far
        self._devices: dict[int, int | None] = {}  # item -> device id (None: unknown)
        self._unknown: set[int] = set()  # items with readings whose meter is unknown
        self._stored = 0
        self._stamps = _Stamps()
        self._tails = _Tails(utcnow().isoformat())
        # batches are written by a background thread while the caller parses the next:
        # the server's work on one batch overlaps Python's on the next (its waits release
        # the GIL); at most two batches are queued, so memory stays bounded
        self._batches: queue.Queue[_Batch | None] = queue.Queue(maxsize=2)
        self._worker: threading.Thread | None = None
        self._failure: BaseException | None = None
        self._aborted = False
        #: False: the caller queries the unit of work between batches (usage points):
        #: each batch is written in the caller's thread, never beside its queries
        self._background = background

    @property
    def _raw(self) -> Any:
        return self._uow.connection.connection.driver_connection

    def add(self, blocks: Sequence[ReadingBlock], meters: Mapping[int, DeviceRef]) -> None:
        """Take the blocks as COPY text at once (in the caller's thread): what waits for
        the writer are strings, which the garbage collector never scans, and the writer's
        thread is left with the round trips."""
        if self._failure is not None:  # stop reading the input: the batch already failed
            raise self._failure
        stamps, tails = self._stamps, self._tails
        if len(stamps) > 200_000:
            stamps.clear()
        if len(tails) > 10_000:
            tails.clear()
        out = self._blocks
        for item, code, readings in blocks:
            if readings:  # ``!s``: str() of a Decimal, twice as fast as format()
                text = "".join(
                    [f"{_PREFIX}{stamps[ts]}{value!s}{tails[q]}" for ts, value, q in readings]
                )
                out.append((item, code, text, len(readings)))
                self._pending += len(readings)
        self._meters.update(meters)
        if self._pending >= self._batch_rows:
            self._flush()

    def finish(self) -> StagingResult:
        self._flush()
        if self._worker is not None:
            self._batches.put(None)
            self._worker.join()
        if self._failure is not None:
            raise self._failure
        # as the staged path reports them: items with readings, each once, in order
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
        if not self._background:
            self._write(blocks, meters)
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

    def _write(self, blocks: list[_TextBlock], meters: dict[int, DeviceRef]) -> None:
        try:
            devices = self._devices_of(meters, {b[0] for b in blocks})
            self._unknown.update(b[0] for b in blocks if b[0] not in devices)
            blocks = [b for b in blocks if b[0] in devices]
            if not blocks:
                return
            types = self._repo.register_types(sorted({b[1] for b in blocks}))
            self._copy(blocks, devices, types)
        except psycopg.errors.UniqueViolation as exc:
            # the primary key is the check: a reading stored already, or twice in the input
            raise KeyConflict(f"a reading is stored already or repeats: {exc}") from exc
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise StoreUnavailable(f"store unavailable during bulk write: {exc}") from exc
        except psycopg.Error as exc:
            raise PermanentError(f"bulk write refused by the store: {exc}") from exc
        self._stored += sum(b[3] for b in blocks)

    def _devices_of(self, meters: Mapping[int, DeviceRef], items: set[int]) -> dict[int, int]:
        """item -> device id for the items of a batch whose meter exists: the meters named
        in the batch resolved in one round trip, those of earlier batches remembered (a
        meter whose readings go on in the next batch is resolved once)."""
        self._refs.update(meters)
        ask = {i: self._refs[i] for i in items if i not in self._devices and i in self._refs}
        if ask:
            found = self._resolve(ask)
            for item in ask:
                self._devices[item] = found.get(item)
        out: dict[int, int] = {}
        for item in items:
            device = self._devices.get(item)
            if device is not None:
                out[item] = device
        return out

    def _resolve(self, meters: Mapping[int, DeviceRef]) -> dict[int, int]:
        """item -> device id, for the meters that exist (mRID; else unique name or serial),
        in one round trip."""
        mrids = sorted({r.mrid for r in meters.values() if r.mrid})
        names = sorted({r.name for r in meters.values() if not r.mrid and r.name})
        found: dict[str, dict[str, int | None]] = {"mrid": {}, "name": {}, "serial_number": {}}
        if mrids or names:
            with self._raw.cursor() as cur:
                # joins with the unnested keys, planned per call (prepare=False): a
                # prepared generic plan of ``col = ANY(%s)`` compares every device of the
                # utility with every key (measured: 70 ms instead of 2 ms for 521 meters)
                cur.execute(
                    _RESOLVE, {"u": self._utility_id, "m": mrids, "n": names}, prepare=False
                )
                for column, key, first, count in cur.fetchall():
                    found[column][key] = int(first) if count == 1 else None
        by_mrid, by_name, by_serial = found["mrid"], found["name"], found["serial_number"]
        out: dict[int, int] = {}
        for item, ref in meters.items():
            if ref.mrid:
                device = by_mrid.get(ref.mrid)
            else:  # as the staged path: a unique name, else a unique serial number
                name = ref.name or ""
                device = by_name.get(name) or by_serial.get(name)
            if device is not None:
                out[item] = device
        return out

    def _copy(
        self, blocks: Sequence[_TextBlock], devices: Mapping[int, int], types: Mapping[str, int]
    ) -> None:
        with self._raw.cursor() as cur, cur.copy(_COPY) as copy:
            chunk: list[str] = []
            size = 0
            for item, code, text, count in blocks:
                chunk.append(text.replace(_PREFIX, f"{devices[item]}\t{types[code]}"))
                size += count
                if size >= 5_000:  # the server parses while the next part is made
                    copy.write("".join(chunk))
                    chunk.clear()
                    size = 0
            copy.write("".join(chunk))
