"""Readings as reply text, for the read path (get MeterReadings).

On PostgreSQL the server writes the text itself: one statement over the raw
psycopg connection of the unit of work (its transaction), instants formatted by
``to_char`` exactly as ``datetime.isoformat()`` writes an aware UTC instant and
values as ``numeric::text`` (plain decimal, as the reply wants it), streamed in
chunks so a meter-year or more is never held whole. No SQLAlchemy statement
compilation and no per-row ``datetime``/``Decimal`` objects: for a meter-day this
costs a third of the SQLAlchemy query it replaces (docs/soap.md, Performance).

On SQLite the ordinary query is formatted in Python (the embedded default).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
from collections.abc import Generator, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

import psycopg

from cim_schemas.errors import PermanentError, StoreUnavailable
from cim_schemas.meter_readings import value_text
from mdm.model import DeviceRef
from mdm.ports import MeterTexts, ReadingRecord, ReadingText

if TYPE_CHECKING:
    from adapters.sql.readings import SqlReadingRepository

#: rows fetched per round trip while streaming (FETCH of a server-side cursor)
STREAM_CHUNK: Final = 2_000
#: up to this many meter-days a query runs as a prepared statement whose result is
#: fetched whole (planned once per connection: a third of a meter-day get's database
#: time is planning); more, or an open period, are streamed in chunks
PREPARED_METER_DAYS: Final = 62


def _iso(column: str) -> str:
    """SQL writing the instant ``column`` as ``datetime.isoformat()`` writes it in UTC."""
    return (
        f"to_char({column} AT TIME ZONE 'UTC', CASE WHEN date_trunc('second', {column}) = "
        f"""{column} THEN 'YYYY-MM-DD"T"HH24:MI:SS"+00:00"' """
        """ELSE 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"' END)"""
    )


_ISO: Final = _iso("r.ts")


def _filters(*, reading_types: bool, start: bool, end: bool) -> str:
    where = []
    if reading_types:
        where.append(" AND rt.code = ANY(%(codes)s)")
    if start:
        where.append(" AND r.ts > %(start)s")
    if end:
        where.append(" AND r.ts <= %(end)s")
    return "".join(where)


def pg_sql(*, reading_types: bool, start: bool, end: bool) -> str:
    """The statement for the given filters (device ids always)."""
    return (
        f"SELECT d.mrid, rt.code, {_ISO}, r.value::text, r.quality "
        "FROM reading r JOIN end_device d ON d.id = r.device_id "
        "JOIN reading_type rt ON rt.id = r.reading_type_id "
        "WHERE r.device_id = ANY(%(ids)s)"
        + _filters(reading_types=reading_types, start=start, end=end)
        + " ORDER BY r.device_id, r.reading_type_id, r.ts"
    )


def pg_meters_sql(*, reading_types: bool, start: bool, end: bool) -> str:
    """Meters by mRID and their readings in one statement: first one row per meter
    found (kind 0: which mRIDs exist), then the readings (kind 1), in the order of
    :func:`pg_sql`; the sort keys stay inside (the client decodes 6 text columns)."""
    return (
        "SELECT kind, mrid, code, iso, value, quality FROM ("
        "SELECT 0 AS kind, d.id AS device, d.mrid, NULL::text AS code, NULL::text AS iso, "
        "NULL::text AS value, NULL::text AS quality, 0 AS rt, NULL::timestamptz AS ts "
        "FROM end_device d WHERE d.utility_id = %(utility)s AND d.mrid = ANY(%(mrids)s::text[]) "
        "UNION ALL "
        f"SELECT 1, r.device_id, d.mrid, rt.code, {_ISO}, r.value::text, r.quality, "
        "r.reading_type_id, r.ts "
        "FROM end_device d JOIN reading r ON r.device_id = d.id "
        "JOIN reading_type rt ON rt.id = r.reading_type_id "
        "WHERE d.utility_id = %(utility)s AND d.mrid = ANY(%(mrids)s::text[])"
        + _filters(reading_types=reading_types, start=start, end=end)
        + ") AS u ORDER BY kind, device, rt, ts"
    )


def pg_records_sql(*, reading_types: bool, start: bool, end: bool) -> str:
    """One meter's readings (by utility and mRID) with their versions, in the order of
    :func:`pg_sql`, at most ``limit`` rows."""
    return (
        f"SELECT d.mrid, rt.code, {_ISO}, r.value::text, r.quality, r.version, "
        f"{_iso('r.recorded_at')} "
        "FROM end_device d JOIN reading r ON r.device_id = d.id "
        "JOIN reading_type rt ON rt.id = r.reading_type_id "
        "WHERE d.utility_id = %(utility)s AND d.mrid = %(mrid)s"
        + _filters(reading_types=reading_types, start=start, end=end)
        + " ORDER BY r.reading_type_id, r.ts LIMIT %(limit)s"
    )


#: whether a meter exists (asked only when :func:`pg_records_sql` found no reading)
_PG_METER_EXISTS: Final = (
    "SELECT 1 FROM end_device WHERE utility_id = %(utility)s AND mrid = %(mrid)s"
)


def text_array(values: Sequence[str]) -> str:
    """A PostgreSQL text[] literal (quoted and escaped): cheaper to send than a list."""
    quoted = (v.replace("\\", "\\\\").replace('"', '\\"') for v in values)
    return "{" + ",".join(f'"{v}"' for v in quoted) + "}"


def _params(
    reading_types: Sequence[str] | None, start: datetime | None, end: datetime | None
) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if reading_types is not None:
        params["codes"] = list(reading_types)
    if start is not None:
        params["start"] = start
    if end is not None:
        params["end"] = end
    return params


def small(n_meters: int, start: datetime | None, end: datetime | None) -> bool:
    """Whether a query's result is small enough to fetch whole (see PREPARED_METER_DAYS)."""
    if start is None or end is None:
        return False
    return n_meters * (end - start).total_seconds() <= PREPARED_METER_DAYS * 86_400


_cursor_numbers = itertools.count(1)


@contextlib.contextmanager
def _read_errors() -> Iterator[None]:
    """psycopg's errors while reading as the project's (the raw connection is below
    SQLAlchemy's mapping, adapters/sql/errors.py)."""
    try:
        yield
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        raise StoreUnavailable(f"database unavailable while reading: {exc}") from exc
    except psycopg.Error as exc:
        raise PermanentError(f"store error while reading: {type(exc).__name__}: {exc}") from exc


def _stream(
    raw: psycopg.Connection[Any], sql: str, params: dict[str, Any], *, whole: bool = False
) -> Generator[Any, None, None]:
    """Rows of one statement: ``whole``, a prepared statement's result fetched at once,
    else through a server-side cursor (``DECLARE`` .. ``FETCH`` chunks) in the current
    transaction. Several of these may be open on one connection at a time (a get with
    several TimeSchedules reads one period after the other): each ``FETCH`` takes the
    connection only while it runs. psycopg's ``cursor.stream`` held the connection's
    lock until its result was read to the end, so a second statement from the same
    thread waited on that lock for ever (issue 12, point 8). Close the iterator when
    not reading it to the end: the server-side cursor is closed then."""
    with _read_errors():
        if whole:
            with raw.cursor() as cur:
                cur.execute(sql, params, prepare=True)
                yield from cur.fetchall()
                return
        name = f"amihub_read_{next(_cursor_numbers)}"
        with raw.cursor(name=name) as named:
            named.itersize = STREAM_CHUNK
            named.execute(sql, params)
            while rows := named.fetchmany(STREAM_CHUNK):
                yield from rows
                if len(rows) < STREAM_CHUNK:
                    return


def pg_reading_text(
    raw: psycopg.Connection[Any],
    device_ids: Sequence[int],
    reading_types: Sequence[str] | None,
    start: datetime | None,
    end: datetime | None,
) -> Iterator[ReadingText]:
    """Stream the rows of :func:`pg_sql` on ``raw`` (inside its current transaction)."""
    sql = pg_sql(
        reading_types=reading_types is not None, start=start is not None, end=end is not None
    )
    params = _params(reading_types, start, end)
    params["ids"] = sorted(set(device_ids))
    new = tuple.__new__
    rows = _stream(raw, sql, params, whole=small(len(params["ids"]), start, end))
    try:
        for row in rows:
            yield new(ReadingText, row)
    finally:
        rows.close()


def pg_meter_texts(
    raw: psycopg.Connection[Any],
    utility_id: int,
    mrids: Sequence[str],
    reading_types: Sequence[str] | None,
    start: datetime | None,
    end: datetime | None,
) -> MeterTexts:
    """:func:`pg_meters_sql`: which mRIDs exist (read before returning) and their readings
    (streamed)."""
    sql = pg_meters_sql(
        reading_types=reading_types is not None, start=start is not None, end=end is not None
    )
    params = _params(reading_types, start, end)
    params["utility"] = utility_id
    wanted = sorted(set(mrids))
    params["mrids"] = text_array(wanted)
    rows = _stream(raw, sql, params, whole=small(len(wanted), start, end))
    found: set[str] = set()
    first: Any = None
    for row in rows:
        if row[0]:
            first = row
            break
        found.add(row[1])
    if first is None:
        rows.close()
        return MeterTexts(found, iter(()))
    return MeterTexts(found, _texts(first, rows))


def _texts(first: Any, rows: Generator[Any, None, None]) -> Iterator[ReadingText]:
    new = tuple.__new__
    try:
        yield new(ReadingText, first[1:])
        for row in rows:
            yield new(ReadingText, row[1:])
    finally:
        rows.close()


def pg_meter_records(
    raw: psycopg.Connection[Any],
    utility_id: int,
    mrid: str,
    reading_types: Sequence[str] | None,
    start: datetime | None,
    end: datetime | None,
    limit: int,
) -> list[ReadingRecord] | None:
    """:func:`pg_records_sql` as a prepared statement (planned once per connection), its
    text rows taken as they come: no per-reading datetime or Decimal."""
    sql = pg_records_sql(
        reading_types=reading_types is not None, start=start is not None, end=end is not None
    )
    params = _params(reading_types, start, end)
    params["utility"] = utility_id
    params["mrid"] = mrid
    params["limit"] = limit + 1
    with _read_errors(), raw.cursor() as cur:
        cur.execute(sql, params, prepare=True)
        rows = cur.fetchall()
        if rows:
            return list(map(_record, rows))
        cur.execute(_PG_METER_EXISTS, {"utility": utility_id, "mrid": mrid}, prepare=True)
        return [] if cur.fetchone() is not None else None


#: a row of :func:`pg_records_sql` as the record it is (no conversion)
_record = functools.partial(tuple.__new__, ReadingRecord)


def plain_meter_records(
    repo: SqlReadingRepository,
    utility_id: int,
    mrid: str,
    reading_types: Sequence[str] | None,
    start: datetime | None,
    end: datetime | None,
    limit: int,
) -> list[ReadingRecord] | None:
    """The plain path: the meter looked up, :meth:`SqlReadingRepository.query`, each row
    written by :meth:`ReadingRecord.of` (SQLite; and what PostgreSQL's text must equal)."""
    device = repo.devices.find(utility_id, DeviceRef(mrid=mrid))
    if device is None or device.id is None:
        return None
    rows = repo.query([device.id], reading_types, start, end)
    try:
        return [ReadingRecord.of(r) for r in itertools.islice(rows, limit + 1)]
    finally:
        close = getattr(rows, "close", None)
        if close is not None:
            close()


def sqlite_reading_text(
    repo: SqlReadingRepository,
    device_ids: Sequence[int],
    reading_types: Sequence[str] | None,
    start: datetime | None,
    end: datetime | None,
) -> Iterator[ReadingText]:
    """The ordinary query, formatted as the PostgreSQL statement formats it."""
    new = tuple.__new__
    for r in repo.query(device_ids, reading_types, start, end):
        value = value_text(r.value)
        yield new(ReadingText, (r.device_mrid, r.reading_type, r.ts.isoformat(), value, r.quality))


def sqlite_meter_texts(
    repo: SqlReadingRepository,
    utility_id: int,
    mrids: Sequence[str],
    reading_types: Sequence[str] | None,
    start: datetime | None,
    end: datetime | None,
) -> MeterTexts:
    """The meters looked up first, then :func:`sqlite_reading_text`."""
    found = repo.devices.find_many(utility_id, [DeviceRef(mrid=m) for m in mrids])
    ids = [d.id for d in found.values() if d.id is not None]
    rows = sqlite_reading_text(repo, ids, reading_types, start, end) if ids else iter(())
    return MeterTexts({ref.mrid or "" for ref in found}, rows)
