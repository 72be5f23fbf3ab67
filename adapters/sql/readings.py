"""Readings: versioned storage and bulk staging.

``reading`` holds the current version of each (device, reading type, instant);
an edit moves the stored version to ``reading_history`` and replaces it with
``version + 1`` (it never overwrites silently).

Bulk ingestion (:meth:`SqlReadingRepository.ingest`, which chooses between this
staged path and the direct one: adapters/sql/ingest.py); the staged path
(:class:`SqlReadingStaging`): rows are flushed in batches to a
TEMP staging table while they arrive (psycopg 3 COPY text on PostgreSQL,
sqlite3 ``executemany`` on SQLite), so memory stays bounded. :meth:`apply`
then works set-based: meters resolved by one join, reading types registered in
bulk, and either a fast path (none of the keys can exist yet: one
``INSERT ... SELECT`` guarded by the primary key, which also catches
duplicates) or a merge path (history ``INSERT ... SELECT``, ``UPDATE ... FROM``,
``INSERT ... SELECT ... WHERE NOT EXISTS``). On PostgreSQL a small message
(never flushed) skips the temp tables: one statement over ``unnest`` arrays.
See docs/store.md.
"""

from __future__ import annotations

import functools
import re
import weakref
from collections.abc import Iterator, Sequence
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, func, insert, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite

from adapters.sql import tables as t
from adapters.sql.errors import guard, guarded, is_unique_violation, translate
from adapters.sql.types import COPY_SPECIALS, UTCDateTime, copy_text, decimal_text, sqlite_ts
from cim_schemas.errors import StoreUnavailable
from mdm.model import DeviceRef, IngestStats, StoredReading
from mdm.ports import (
    DuplicateReading,
    MeterTexts,
    ReadingFeed,
    ReadingRecord,
    ReadingText,
    StagedReading,
    StagingResult,
)

if TYPE_CHECKING:
    from adapters.sql.registry import SqlEndDeviceRepository
    from adapters.sql.uow import SqlUnitOfWork

DEFAULT_BATCH_SIZE = 50_000
#: PostgreSQL: a message of at most this many readings goes in one statement (arrays).
SMALL_MESSAGE_ROWS = 5_000
#: PostgreSQL: a feed of more readings than this is first COPYed straight into
#: ``reading`` (adapters/sql/direct.py); smaller ones take the one-statement path
DIRECT_FROM_ROWS = SMALL_MESSAGE_ROWS
MAX_REPORTED_DUPLICATES = 10_000
QUERY_DEVICE_CHUNK = 5_000
_TS_CACHE_LIMIT = 100_000
_COPY_SLICE = 5_000


@functools.lru_cache(maxsize=256)
def _pg_placeholders(sql: str) -> str:
    """``:name`` -> ``%(name)s`` (psycopg's style); ``::`` casts are left alone."""
    return re.sub(r"(?<![:\w]):([A-Za-z_]\w*)", r"%(\1)s", sql)


def _sqlite_number(column: str) -> str:
    """SQLite: a stored decimal text without the trailing zeros of its scale (``1.50``
    -> ``1.5``, ``2.0`` -> ``2``), so that equal numbers compare equal."""
    return (
        f"(CASE WHEN instr({column}, '.') > 0 "
        f"THEN rtrim(rtrim({column}, '0'), '.') ELSE {column} END)"
    )


def _pg_ts(ts: datetime) -> str:
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError(f"naive datetime {ts!r}: readings need timezone-aware UTC instants")
    return ts.isoformat()


class SqlReadingStaging:
    """One message's readings on their way in. Use once: add, add, ..., apply."""

    def __init__(self, uow: SqlUnitOfWork, repo: SqlReadingRepository, batch_size: int) -> None:
        self._uow = uow
        self._repo = repo
        self._batch_size = batch_size
        n = uow.next_staging_number()
        self._r = f"amihub_stg_reading_{n}"
        self._m = f"amihub_stg_meter_{n}"
        self._x = f"amihub_stg_resolved_{n}"
        self._pg = uow.connection.dialect.name == "postgresql"
        self._created = False
        self._transaction = 0
        self._x_created = False
        self._applied = False
        self._pending: list[StagedReading] = []
        self._meters: dict[int, DeviceRef] = {}
        self._types: dict[str, int] = {}  # code -> reading_type.id (registered per batch)
        self._items: set[int] = set()
        self._ts_cache: dict[datetime, str] = {}
        self._rows = 0
        self._min_ts: datetime | None = None
        self._max_ts: datetime | None = None

    @property
    def _conn(self) -> Connection:
        return self._uow.connection

    # ------------------------------------------------------------------ collecting

    def add_readings(self, rows: Sequence[StagedReading]) -> None:
        if self._applied:
            raise RuntimeError("this staging was applied already")
        if not rows:
            return
        if len(rows) >= self._batch_size:
            self._flush_pending()
            for start in range(0, len(rows), self._batch_size):
                self._write(rows[start : start + self._batch_size])
            return
        self._pending.extend(rows)
        if len(self._pending) >= self._batch_size:
            self._flush_pending()

    def add_meter(self, item: int, ref: DeviceRef) -> None:
        if self._applied:
            raise RuntimeError("this staging was applied already")
        self._meters[item] = ref

    def _flush_pending(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, []
            self._write(pending)

    def _create(self) -> None:
        if self._created:
            return
        with guard():
            if self._pg:
                # Temp tables are not WAL-logged; ON COMMIT DROP cleans up if apply never runs.
                self._conn.exec_driver_sql(
                    f"CREATE TEMP TABLE {self._r} (item integer NOT NULL, rt integer NOT NULL, "
                    "ts timestamptz NOT NULL, value numeric NOT NULL, quality text NOT NULL) "
                    "ON COMMIT DROP"
                )
            else:  # a staging committed without apply leaves its table on the connection
                self._conn.exec_driver_sql(f"DROP TABLE IF EXISTS temp.{self._r}")
                self._conn.exec_driver_sql(
                    f"CREATE TEMP TABLE {self._r} (item INTEGER NOT NULL, rt INTEGER NOT NULL, "
                    "ts TEXT NOT NULL, value TEXT NOT NULL, quality TEXT NOT NULL)"
                )
        self._created = True
        self._transaction = self._uow.transaction_number

    def _write(self, rows: Sequence[StagedReading]) -> None:
        self._create()
        types = self._types
        new_codes = [code for code in {r[1] for r in rows} if code not in types]
        if new_codes:  # (c) new reading types: registered in one statement per batch
            types.update(self._repo.register_types(new_codes))
        if len(self._ts_cache) > _TS_CACHE_LIMIT:
            self._ts_cache.clear()
        # Each distinct instant is formatted once (cache miss): check and range it there,
        # before any COPY starts, so that a bad instant cannot abort the transaction.
        cache = self._ts_cache
        fmt = _pg_ts if self._pg else sqlite_ts
        for ts in {r[2] for r in rows}.difference(cache):
            cache[ts] = fmt(ts)  # raises ValueError on a naive datetime
            if self._min_ts is None or ts < self._min_ts:
                self._min_ts = ts
            if self._max_ts is None or ts > self._max_ts:
                self._max_ts = ts
        self._items.update({r[0] for r in rows})
        with guard():
            if self._pg:
                self._write_pg(rows)
            else:
                self._write_sqlite(rows)
        self._rows += len(rows)

    def _write_pg(self, rows: Sequence[StagedReading]) -> None:
        """COPY text, written in slices so the server parses while Python formats."""
        types = self._types
        cache = self._ts_cache
        if any(c in q for q in {r[4] for r in rows} for c in COPY_SPECIALS):
            rows = [r._replace(quality=copy_text(r[4])) for r in rows]
        raw: Any = self._conn.connection.driver_connection
        with (
            raw.cursor() as cur,
            cur.copy(f"COPY {self._r} (item, rt, ts, value, quality) FROM STDIN") as copy,
        ):
            last_item: int | None = None
            last_code: str | None = None
            prefix = ""
            for start in range(0, len(rows), _COPY_SLICE):
                lines: list[str] = []
                append = lines.append
                for item, code, ts, value, quality in rows[start : start + _COPY_SLICE]:
                    if item != last_item or code != last_code:  # rows come in runs
                        prefix = f"{item}\t{types[code]}\t"
                        last_item, last_code = item, code
                    append(f"{prefix}{cache[ts]}\t{value!s}\t{quality}\n")
                copy.write("".join(lines))

    def _write_sqlite(self, rows: Sequence[StagedReading]) -> None:
        types = self._types
        cache = self._ts_cache
        out: list[tuple[int, int, str, str, str]] = []
        append = out.append
        for item, code, ts, value, quality in rows:
            append((item, types[code], cache[ts], decimal_text(value), quality))
        raw: Any = self._conn.connection.driver_connection
        raw.executemany(f"INSERT INTO {self._r} VALUES (?, ?, ?, ?, ?)", out)

    # ------------------------------------------------------------------ applying

    def apply(self, utility_id: int) -> StagingResult:
        if self._applied:
            raise RuntimeError("this staging was applied already")
        self._applied = True
        if self._created and self._transaction != self._uow.transaction_number:
            raise RuntimeError(
                "the unit of work committed or rolled back since these readings were staged: "
                "a staging must be applied in the transaction that filled it"
            )
        try:
            with guard():
                if self._pg and not self._created and len(self._pending) <= SMALL_MESSAGE_ROWS:
                    small = self._apply_small(utility_id)
                    if small is not None:
                        return small
                    # duplicates: the staged path below finds and reports them
                self._flush_pending()
                self._create()
                return self._apply(utility_id)
        finally:
            self._ts_cache.clear()
            self._drop()

    def _drop(self) -> None:
        if not self._created:
            return
        names = [self._r, self._m] + ([self._x] if self._x_created else [])
        try:
            for name in names:
                self._conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
        except sa_exc.SQLAlchemyError:
            pass  # the transaction failed: rolling it back drops the temp tables

    def _exec(self, sql: str, **params: Any) -> Any:
        """Run ``sql`` (``:name`` placeholders) straight on the driver: no SQLAlchemy
        compilation, as these statements differ only by their temp table names."""
        if self._pg:
            return self._conn.exec_driver_sql(_pg_placeholders(sql), params)
        values = {k: sqlite_ts(v) if isinstance(v, datetime) else v for k, v in params.items()}
        return self._conn.exec_driver_sql(sql, values)

    def _apply(self, utility_id: int) -> StagingResult:
        conn = self._conn
        now = _now()
        # (b) meters: a small staging table, resolved by one set-based UPDATE.
        id_type = "bigint" if self._pg else "INTEGER"
        if not self._pg:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS temp.{self._m}")
        conn.exec_driver_sql(
            f"CREATE TEMP TABLE {self._m} (item integer PRIMARY KEY, mrid text, name text, "
            f"device_id {id_type})" + (" ON COMMIT DROP" if self._pg else "")
        )
        if self._meters and self._pg:
            raw: Any = conn.connection.driver_connection
            with (
                raw.cursor() as cur,
                cur.copy(f"COPY {self._m} (item, mrid, name) FROM STDIN") as copy,
            ):
                for item, ref in self._meters.items():
                    copy.write_row((item, ref.mrid or None, ref.name or None))
        elif self._meters:
            raw = conn.connection.driver_connection
            raw.executemany(
                f"INSERT INTO {self._m} (item, mrid, name) VALUES (?, ?, ?)",
                [(item, ref.mrid or None, ref.name or None) for item, ref in self._meters.items()],
            )
        unique_match = (
            "(SELECT CASE WHEN count(*) = 1 THEN min(d.id) END FROM end_device d "
            "WHERE d.utility_id = :u AND d.{col} = m.name)"
        )
        self._exec(
            f"UPDATE {self._m} AS m SET device_id = CASE "
            "WHEN m.mrid IS NOT NULL THEN (SELECT d.id FROM end_device d "
            "WHERE d.utility_id = :u AND d.mrid = m.mrid) "
            "WHEN m.name IS NOT NULL THEN COALESCE("
            + unique_match.format(col="name")
            + ", "
            + unique_match.format(col="serial_number")
            + ") END",
            u=utility_id,
        )
        resolved = {
            int(r[0])
            for r in conn.exec_driver_sql(f"SELECT item FROM {self._m} WHERE device_id IS NOT NULL")
        }
        unknown = sorted(self._items - resolved)
        if self._rows == 0 or not resolved & self._items:
            return StagingResult(IngestStats(), unknown_items=unknown)
        if self._pg:
            conn.exec_driver_sql(f"ANALYZE {self._m}")

        source = (
            f"FROM {self._r} r JOIN {self._m} m ON m.item = r.item WHERE m.device_id IS NOT NULL"
        )
        # (d) fast path: none of the keys can exist -> one INSERT guarded by the PK.
        if not self._keys_may_exist():
            try:
                with conn.begin_nested():
                    stored = self._exec(
                        "INSERT INTO reading (device_id, reading_type_id, ts, value, quality, "
                        "version, recorded_at) SELECT m.device_id, r.rt, r.ts, "
                        f"r.value, r.quality, 1, :now {source}",
                        now=now,
                    ).rowcount
                return StagingResult(IngestStats(stored=stored), unknown_items=unknown)
            except sa_exc.IntegrityError as error:
                if not is_unique_violation(error):
                    raise
            duplicates = self._duplicates()
            if duplicates:
                return StagingResult(IngestStats(), unknown_items=unknown, duplicates=duplicates)
            # a concurrent writer stored some of the keys meanwhile: merge instead.

        # (d) merge path.
        if not self._pg:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS temp.{self._x}")
        self._x_created = True
        conn.exec_driver_sql(
            f"CREATE TEMP TABLE {self._x} AS SELECT m.device_id, r.rt AS reading_type_id, r.ts, "
            f"r.value, r.quality {source}"
        )
        try:
            with conn.begin_nested():
                conn.exec_driver_sql(
                    f"CREATE UNIQUE INDEX {self._x}_key ON {self._x} "
                    "(device_id, reading_type_id, ts)"
                )
        except sa_exc.IntegrityError as error:
            if not is_unique_violation(error):
                raise
            return StagingResult(
                IngestStats(), unknown_items=unknown, duplicates=self._duplicates()
            )
        if self._pg:
            conn.exec_driver_sql(f"ANALYZE {self._x}")
        total = int(conn.exec_driver_sql(f"SELECT count(*) FROM {self._x}").scalar_one())
        keys = "r.device_id = x.device_id AND r.reading_type_id = x.reading_type_id AND r.ts = x.ts"
        # a value differs when its number does (1.5 after 1.50 is unchanged and keeps the
        # text first sent): numeric on PostgreSQL, the texts without trailing zeros on
        # SQLite (whose values keep their scale: adapters/sql/types.py)
        differs = (
            "(r.value <> x.value OR r.quality <> x.quality)"
            if self._pg
            else f"({_sqlite_number('r.value')} <> {_sqlite_number('x.value')} "
            "OR r.quality <> x.quality)"
        )
        history = (
            "INSERT INTO reading_history (device_id, reading_type_id, ts, version, value, "
            "quality, recorded_at, superseded_at) SELECT {cols}, :now FROM {src}"
        )
        cols = "device_id, reading_type_id, ts, version, value, quality, recorded_at"
        if self._pg:
            # One statement: the rows archived are exactly the rows updated, locked
            # (FOR UPDATE) so that a concurrent edit cannot slip in between.
            superseded = self._exec(
                f"WITH old AS (SELECT r.{cols.replace(', ', ', r.')} FROM reading r "
                f"JOIN {self._x} x ON {keys} WHERE {differs} FOR UPDATE OF r), "
                "hist AS ("
                + history.format(cols=cols, src="old")
                + " RETURNING device_id, reading_type_id, ts) "
                "UPDATE reading AS r SET value = x.value, quality = x.quality, "
                f"version = r.version + 1, recorded_at = :now FROM hist h, {self._x} x "
                "WHERE r.device_id = h.device_id AND r.reading_type_id = h.reading_type_id "
                f"AND r.ts = h.ts AND {keys}",
                now=now,
            ).rowcount
        else:  # SQLite: BEGIN IMMEDIATE already keeps every other writer out
            self._exec(
                history.format(
                    cols=f"r.{cols.replace(', ', ', r.')}",
                    src=f"reading r JOIN {self._x} x ON {keys} WHERE {differs}",
                ),
                now=now,
            )
            superseded = self._exec(
                "UPDATE reading AS r SET value = x.value, quality = x.quality, "
                f"version = r.version + 1, recorded_at = :now FROM {self._x} AS x "
                f"WHERE {keys} AND {differs}",
                now=now,
            ).rowcount
        try:
            with conn.begin_nested():
                stored = self._exec(
                    "INSERT INTO reading (device_id, reading_type_id, ts, value, quality, "
                    "version, recorded_at) SELECT x.device_id, x.reading_type_id, x.ts, x.value, "
                    f"x.quality, 1, :now FROM {self._x} x WHERE NOT EXISTS "
                    f"(SELECT 1 FROM reading r WHERE {keys})",
                    now=now,
                ).rowcount
        except sa_exc.IntegrityError as error:
            if not is_unique_violation(error):
                raise
            raise StoreUnavailable(
                "readings of the same meters were stored concurrently; retry"
            ) from error
        stats = IngestStats(
            stored=stored, superseded=superseded, unchanged=total - stored - superseded
        )
        return StagingResult(stats, unknown_items=unknown)

    def _apply_small(self, utility_id: int) -> StagingResult | None:
        """PostgreSQL, a message that never needed a flush: one statement, no temp tables.

        Readings and meter references travel as arrays (``unnest``); the same
        resolution, duplicate check and supersede logic as the staged path run in
        one statement of data-modifying CTEs. Returns None (nothing written) if the
        message has duplicates: the staged path then reports them.
        """
        rows = self._pending
        items = {r[0] for r in rows}
        if not rows:
            return StagingResult(IngestStats(), unknown_items=[])
        for ts in {r[2] for r in rows}:
            _pg_ts(ts)  # refuse naive datetimes
        types = self._repo.register_types(sorted({r[1] for r in rows}))
        meters = list(self._meters.items())
        name_match = (
            "(SELECT CASE WHEN count(*) = 1 THEN min(d.id) END FROM end_device d "
            "WHERE d.utility_id = %(u)s AND d.{col} = u.name)"
        )
        keys = "{a}.device_id = {b}.device_id AND {a}.reading_type_id = {b}.reading_type_id "
        keys += "AND {a}.ts = {b}.ts"
        sql = (
            "WITH m AS (SELECT u.item, CASE WHEN u.mrid IS NOT NULL THEN (SELECT d.id "
            "FROM end_device d WHERE d.utility_id = %(u)s AND d.mrid = u.mrid) "
            "WHEN u.name IS NOT NULL THEN COALESCE("
            + name_match.format(col="name")
            + ", "
            + name_match.format(col="serial_number")
            + ") END AS device_id FROM unnest(%(m_item)s::int[], %(m_mrid)s::text[], "
            "%(m_name)s::text[]) AS u(item, mrid, name)), "
            "n AS (SELECT m.device_id, s.rt AS reading_type_id, s.ts, s.value, s.quality "
            "FROM unnest(%(r_item)s::int[], %(r_rt)s::int[], %(r_ts)s::timestamptz[], "
            "%(r_value)s::numeric[], %(r_quality)s::text[]) AS s(item, rt, ts, value, quality) "
            "JOIN m ON m.item = s.item WHERE m.device_id IS NOT NULL), "
            "dup AS (SELECT 1 FROM n GROUP BY device_id, reading_type_id, ts "
            "HAVING count(*) > 1 LIMIT 1), "
            "old AS (SELECT r.device_id, r.reading_type_id, r.ts, r.value, r.quality, r.version, "
            "r.recorded_at, n.value AS new_value, n.quality AS new_quality "
            f"FROM reading r JOIN n ON {keys.format(a='r', b='n')} "
            "WHERE NOT EXISTS (SELECT 1 FROM dup) FOR UPDATE OF r), "
            "changed AS (SELECT * FROM old WHERE value <> new_value OR quality <> new_quality), "
            "hist AS (INSERT INTO reading_history (device_id, reading_type_id, ts, version, "
            "value, quality, recorded_at, superseded_at) SELECT device_id, reading_type_id, ts, "
            "version, value, quality, recorded_at, %(now)s FROM changed RETURNING 1), "
            "upd AS (UPDATE reading r SET value = c.new_value, quality = c.new_quality, "
            "version = r.version + 1, recorded_at = %(now)s FROM changed c "
            f"WHERE {keys.format(a='r', b='c')} RETURNING 1), "
            "ins AS (INSERT INTO reading (device_id, reading_type_id, ts, value, quality, "
            "version, recorded_at) SELECT n.device_id, n.reading_type_id, n.ts, n.value, "
            "n.quality, 1, %(now)s FROM n WHERE NOT EXISTS (SELECT 1 FROM dup) AND NOT EXISTS "
            f"(SELECT 1 FROM old o WHERE {keys.format(a='o', b='n')}) RETURNING 1) "
            "SELECT EXISTS (SELECT 1 FROM dup), (SELECT count(*) FROM n), "
            "(SELECT count(*) FROM hist), (SELECT count(*) FROM upd), (SELECT count(*) FROM ins), "
            "(SELECT array_agg(item) FROM m WHERE device_id IS NOT NULL)"
        )
        params = {
            "u": utility_id,
            "now": _now(),
            "m_item": [item for item, _ in meters],
            "m_mrid": [ref.mrid or None for _, ref in meters],
            "m_name": [ref.name or None for _, ref in meters],
            "r_item": [r[0] for r in rows],
            "r_rt": [types[r[1]] for r in rows],
            "r_ts": [r[2] for r in rows],
            "r_value": [r[3] for r in rows],
            "r_quality": [r[4] for r in rows],
        }
        conn = self._conn
        try:
            with conn.begin_nested():
                has_dup, total, hist, superseded, stored, resolved = conn.exec_driver_sql(
                    sql, params
                ).one()
        except sa_exc.IntegrityError as error:
            if not is_unique_violation(error):
                raise
            raise StoreUnavailable(
                "readings of the same meters were stored concurrently; retry"
            ) from error
        if has_dup:
            return None
        assert hist == superseded
        unknown = sorted(items - set(resolved or ()))
        stats = IngestStats(
            stored=stored, superseded=superseded, unchanged=total - stored - superseded
        )
        return StagingResult(stats, unknown_items=unknown)

    def _keys_may_exist(self) -> bool:
        """False only if no stored reading of these meters and reading types lies in the
        staged time range (then no staged key can exist)."""
        type_ids = ", ".join(str(int(i)) for i in sorted(set(self._types.values())))
        if self._pg:
            # one primary-key probe per (meter, type): LIMIT 1 inside LATERAL keeps the
            # planner from turning this into a scan of a large reading table
            sql = (
                f"SELECT 1 FROM {self._m} m CROSS JOIN unnest(ARRAY[{type_ids}]) AS t(id) "
                "CROSS JOIN LATERAL (SELECT 1 FROM reading r WHERE r.device_id = m.device_id "
                "AND r.reading_type_id = t.id AND r.ts >= :lo AND r.ts <= :hi LIMIT 1) hit "
                "WHERE m.device_id IS NOT NULL LIMIT 1"
            )
        else:
            sql = (
                f"SELECT 1 FROM {self._m} m JOIN reading r ON r.device_id = m.device_id "
                f"AND r.reading_type_id IN ({type_ids}) AND r.ts >= :lo AND r.ts <= :hi "
                "WHERE m.device_id IS NOT NULL LIMIT 1"
            )
        row = self._exec(sql, lo=self._min_ts, hi=self._max_ts).first()
        return row is not None

    def _duplicates(self) -> list[DuplicateReading]:
        rows = self._exec(
            "SELECT r.item, rt.code, r.ts, g.n FROM ("
            "SELECT m.device_id, r.rt, r.ts, count(*) AS n "
            f"FROM {self._r} r JOIN {self._m} m ON m.item = r.item "
            "WHERE m.device_id IS NOT NULL GROUP BY m.device_id, r.rt, r.ts "
            "HAVING count(*) > 1) g "
            f"JOIN {self._m} m ON m.device_id = g.device_id "
            f"JOIN {self._r} r ON r.item = m.item AND r.rt = g.rt AND r.ts = g.ts "
            "JOIN reading_type rt ON rt.id = r.rt "
            "GROUP BY r.item, rt.code, r.ts, g.n ORDER BY r.item, rt.code, r.ts "
            f"LIMIT {MAX_REPORTED_DUPLICATES}"
        )
        ts_type = UTCDateTime()
        dialect = self._conn.dialect
        out: list[DuplicateReading] = []
        for item, code, ts, n in rows:
            when = ts_type.process_result_value(ts, dialect)
            assert when is not None
            out.append(DuplicateReading(int(item), str(code), when, int(n)))
        return out


_TYPE_CACHE: weakref.WeakKeyDictionary[Engine, dict[str, int]] = weakref.WeakKeyDictionary()


def _committed_types(engine: Engine) -> dict[str, int]:
    """ReadingType ids known to be committed (they are never deleted), per engine."""
    cache = _TYPE_CACHE.get(engine)
    if cache is None:
        cache = _TYPE_CACHE[engine] = {}
    return cache


def _now() -> datetime:
    from adapters.sql.registry import utcnow

    return utcnow()


class SqlReadingRepository:
    def __init__(
        self,
        uow: SqlUnitOfWork,
        batch_size: int = DEFAULT_BATCH_SIZE,
        direct_from_rows: int | None = DIRECT_FROM_ROWS,
    ) -> None:
        self._uow = uow
        self.batch_size = batch_size
        #: PostgreSQL: a feed of more readings than this tries the direct path first
        #: (adapters/sql/ingest.py); None: the staged path only
        self.direct_from_rows = direct_from_rows
        self._type_ids: dict[str, int] = {}

    @property
    def _conn(self) -> Connection:
        return self._uow.connection

    def forget(self) -> None:
        """Drop caches that may hold ids of a rolled-back transaction."""
        self._type_ids.clear()

    def ingest(self, utility_id: int, feed: ReadingFeed) -> StagingResult:
        """The one way readings go in; the path is chosen in adapters/sql/ingest.py."""
        from adapters.sql import ingest

        return ingest.ingest(self._uow, self, utility_id, feed, self.direct_from_rows)

    def staging(self) -> SqlReadingStaging:
        """The staged path: adapters/sql/ingest.py, the store's benchmarks and, until they
        hand their readings to the bus, the head-end's writers
        (tests/unit/test_reading_seam.py)."""
        return SqlReadingStaging(self._uow, self, self.batch_size)

    @guarded
    def reading_type_id(self, code: str) -> int:
        return self.register_types([code])[code]

    @guarded
    def register_types(self, codes: Sequence[str]) -> dict[str, int]:
        """Ids of ReadingType codes, registering the new ones in one statement."""
        shared = _committed_types(self._uow.engine)
        out: dict[str, int] = {}
        for code in codes:
            known = self._type_ids.get(code) or shared.get(code)
            if known is not None:
                out[code] = known
        missing = sorted({c for c in codes if c not in out})
        if not missing:
            return out
        rt = t.reading_type
        query = select(rt.c.id, rt.c.code).where(rt.c.code.in_(missing))
        found = {row.code: int(row.id) for row in self._conn.execute(query)}
        if len(found) < len(missing):
            stmt: Any
            if self._conn.dialect.name == "postgresql":
                stmt = postgresql.insert(rt).on_conflict_do_nothing(index_elements=["code"])
            else:
                stmt = sqlite.insert(rt).on_conflict_do_nothing(index_elements=["code"])
            self._conn.execute(stmt, [{"code": c} for c in missing if c not in found])
            found = {row.code: int(row.id) for row in self._conn.execute(query)}
        self._type_ids.update(found)
        out.update(found)
        return out

    def committed(self) -> None:
        """The transaction committed: its reading type ids are now safe to share."""
        if self._type_ids:
            _committed_types(self._uow.engine).update(self._type_ids)
            self._type_ids.clear()

    def query(
        self,
        device_ids: Sequence[int],
        reading_types: Sequence[str] | None,
        start: datetime | None,
        end: datetime | None,
    ) -> Iterator[StoredReading]:
        """Current versions with ``start < ts <= end`` (interval readings are stamped at
        the end of their interval), streamed in PK order: device id, reading type id, ts.

        Device ids go in chunks of :data:`QUERY_DEVICE_CHUNK` (SQLite limits bound
        parameters), one streamed statement (``yield_per``; a server-side cursor on
        PostgreSQL) after the other, in ascending id order."""
        r, d, rt = t.reading, t.end_device, t.reading_type
        base = (
            select(
                d.c.mrid, rt.c.code, r.c.ts, r.c.value, r.c.quality, r.c.version, r.c.recorded_at
            )
            .join(d, d.c.id == r.c.device_id)
            .join(rt, rt.c.id == r.c.reading_type_id)
            .order_by(r.c.device_id, r.c.reading_type_id, r.c.ts)
            .execution_options(yield_per=10_000)
        )
        if reading_types is not None:
            base = base.where(rt.c.code.in_(list(reading_types)))
        if start is not None:
            base = base.where(r.c.ts > start)
        if end is not None:
            base = base.where(r.c.ts <= end)
        ids = sorted(set(device_ids))
        chunks = [ids[i : i + QUERY_DEVICE_CHUNK] for i in range(0, len(ids), QUERY_DEVICE_CHUNK)]
        return self._stream([base.where(r.c.device_id.in_(chunk)) for chunk in chunks])

    def query_text(
        self,
        device_ids: Sequence[int],
        reading_types: Sequence[str] | None,
        start: datetime | None,
        end: datetime | None,
    ) -> Iterator[ReadingText]:
        """:meth:`query` as reply text; on PostgreSQL the server formats it
        (adapters/sql/read_text.py)."""
        from adapters.sql import read_text

        if not device_ids:
            return iter(())
        if self._conn.dialect.name == "postgresql":
            raw: Any = self._conn.connection.driver_connection
            return read_text.pg_reading_text(raw, device_ids, reading_types, start, end)
        return read_text.sqlite_reading_text(self, device_ids, reading_types, start, end)

    def meter_texts(
        self,
        utility_id: int,
        mrids: Sequence[str],
        reading_types: Sequence[str] | None,
        start: datetime | None,
        end: datetime | None,
    ) -> MeterTexts:
        """Meters by mRID and their readings as text: one statement on PostgreSQL."""
        from adapters.sql import read_text

        if self._conn.dialect.name == "postgresql":
            raw: Any = self._conn.connection.driver_connection
            return read_text.pg_meter_texts(raw, utility_id, mrids, reading_types, start, end)
        return read_text.sqlite_meter_texts(self, utility_id, mrids, reading_types, start, end)

    def meter_records(
        self,
        utility_id: int,
        mrid: str,
        reading_types: Sequence[str] | None,
        start: datetime | None,
        end: datetime | None,
        limit: int,
    ) -> list[ReadingRecord] | None:
        """One meter's readings with their versions as text: on PostgreSQL one prepared
        statement whose text the server writes (adapters/sql/read_text.py), equal to the
        plain path (tests/integration/sql/test_read_text_mutants.py)."""
        from adapters.sql import read_text

        if self._conn.dialect.name == "postgresql":
            raw: Any = self._conn.connection.driver_connection
            return read_text.pg_meter_records(
                raw, utility_id, mrid, reading_types, start, end, limit
            )
        return read_text.plain_meter_records(
            self, utility_id, mrid, reading_types, start, end, limit
        )

    @property
    def devices(self) -> SqlEndDeviceRepository:
        """The unit of work's device repository (SQLite's meter lookup)."""
        from adapters.sql.registry import SqlEndDeviceRepository

        devices = self._uow.devices
        assert isinstance(devices, SqlEndDeviceRepository)
        return devices

    def _stream(self, statements: list[Any]) -> Iterator[StoredReading]:
        try:
            for stmt in statements:
                result = self._conn.execute(stmt)
                try:
                    for row in result:
                        yield StoredReading(*row)
                finally:
                    result.close()
        except sa_exc.SQLAlchemyError as error:
            raise translate(error) from error

    @guarded
    def versions(self, device_id: int, reading_type: str, ts: datetime) -> list[StoredReading]:
        r, h, rt, d = t.reading, t.reading_history, t.reading_type, t.end_device
        mrid = self._conn.execute(select(d.c.mrid).where(d.c.id == device_id)).scalar()
        type_id = self._conn.execute(select(rt.c.id).where(rt.c.code == reading_type)).scalar()
        if mrid is None or type_id is None:
            return []
        out: list[StoredReading] = []
        for table in (r, h):
            rows = self._conn.execute(
                select(table.c.value, table.c.quality, table.c.version, table.c.recorded_at).where(
                    table.c.device_id == device_id,
                    table.c.reading_type_id == type_id,
                    table.c.ts == ts,
                )
            )
            out.extend(
                StoredReading(
                    mrid,
                    reading_type,
                    ts,
                    Decimal(row.value),
                    row.quality,
                    int(row.version),
                    row.recorded_at,
                )
                for row in rows
            )
        out.sort(key=lambda s: s.version, reverse=True)
        return out

    @guarded
    def count(self) -> int:
        return int(self._conn.execute(select(func.count()).select_from(t.reading)).scalar_one())


__all__ = ["DEFAULT_BATCH_SIZE", "DIRECT_FROM_ROWS", "SqlReadingRepository", "insert"]
