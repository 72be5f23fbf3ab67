"""Bulk reading ingestion benchmark (a script, not a test).

    .venv/bin/python -m adapters.sql.benchmark postgresql://postgres@127.0.0.1/test
    .venv/bin/python -m adapters.sql.benchmark sqlite:////tmp/bench.db --rows 1000000

It creates a scratch database (PostgreSQL: ``amihub_bench_<pid>`` next to the
given one, dropped afterwards; SQLite: the given file, replaced), registers the
meters, then times staging + apply of ``--rows`` readings (96 quarter-hours per
meter) into an empty reading table, a replay of the same rows (all unchanged),
and an edit of 10 % of them. On PostgreSQL it also times the raw baseline: COPY
text of the same rows into an indexed plain table.
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
from sqlalchemy import Engine, insert

from adapters.sql import tables as t
from adapters.sql.engine import make_engine, normalise_url
from adapters.sql.migrate import upgrade
from adapters.sql.readings import SqlReadingRepository, SqlReadingStaging
from adapters.sql.registry import utcnow
from adapters.sql.uow import SqlUnitOfWorkFactory
from mdm.model import DeviceRef, IngestStats
from mdm.ports import StagedReading

RT = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
PER_METER = 96


def make_rows(n: int, edit: bool = False, day: int = 0) -> tuple[int, list[StagedReading]]:
    meters = (n + PER_METER - 1) // PER_METER
    t0 = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(days=day)
    stamps = [t0 + timedelta(minutes=15 * k) for k in range(PER_METER)]
    values = [Decimal(f"{k}.{k % 1000:03d}") for k in range(5000)]
    rows: list[StagedReading] = []
    for i in range(n):
        item = i // PER_METER + 1
        v = (i * 7 + (1 if edit and i % 10 == 0 else 0)) % 5000
        rows.append(StagedReading(item, RT, stamps[i % PER_METER], values[v], ""))
    return meters, rows


def setup(engine: Engine, meters: int) -> int:
    upgrade(engine)
    now = utcnow()
    with engine.begin() as conn:
        uid = conn.execute(
            insert(t.utility)
            .values(code="B", name="bench", created_at=now)
            .returning(t.utility.c.id)
        ).scalar_one()
        conn.execute(
            insert(t.end_device),
            [
                {
                    "utility_id": uid,
                    "mrid": f"M{m}",
                    "kind": "meter",
                    "state": "installed",
                    "created_at": now,
                    "updated_at": now,
                }
                for m in range(1, meters + 1)
            ],
        )
    return int(uid)


def _staging(uow: object) -> SqlReadingStaging:
    """The store's staged path itself (what this benchmark measures), below ``ingest``."""
    readings = getattr(uow, "readings", None)
    assert isinstance(readings, SqlReadingRepository)
    return readings.staging()


def ingest(
    factory: SqlUnitOfWorkFactory, uid: int, meters: int, rows: list[StagedReading], chunk: int
) -> tuple[float, IngestStats]:
    started = time.perf_counter()
    with factory() as uow:
        staging = _staging(uow)
        for m in range(1, meters + 1):
            staging.add_meter(m, DeviceRef(mrid=f"M{m}"))
        for start in range(0, len(rows), chunk):
            staging.add_readings(rows[start : start + chunk])
        result = staging.apply(uid)
        uow.commit()
    assert not result.duplicates
    assert not result.unknown_items
    return time.perf_counter() - started, result.stats


def small_messages(
    factory: SqlUnitOfWorkFactory, uid: int, meters: int, count: int = 500
) -> tuple[float, int]:
    """``count`` messages of one meter-day (96 readings), each in its own transaction."""
    t0 = datetime(2024, 1, 10, tzinfo=UTC)
    stamps = [t0 + timedelta(minutes=15 * k) for k in range(PER_METER)]
    values = [Decimal(f"{k}.5") for k in range(PER_METER)]
    started = time.perf_counter()
    for n in range(count):
        with factory() as uow:
            staging = _staging(uow)
            staging.add_meter(1, DeviceRef(mrid=f"M{n % meters + 1}"))
            day = timedelta(days=n // meters)
            staging.add_readings(
                [
                    StagedReading(1, RT, ts + day, v, "")
                    for ts, v in zip(stamps, values, strict=True)
                ]
            )
            result = staging.apply(uid)
            uow.commit()
        assert result.stats.stored == PER_METER
    return time.perf_counter() - started, count


def baseline_copy(plain_url: str, rows: list[StagedReading]) -> dict[str, float]:
    """Raw COPY text of the same rows (formatted beforehand, not timed) into a plain
    table, without and with the primary key: what the server alone costs."""
    lines = [f"{r.item}\t1\t{r.ts.isoformat()}\t{r.value}\t{r.quality}\n" for r in rows]
    out: dict[str, float] = {}
    with psycopg.connect(plain_url) as conn:
        for label, pk in (("no index", ""), ("with PK", ", PRIMARY KEY (device_id, rt, ts)")):
            conn.execute(
                "CREATE TABLE baseline (device_id bigint, rt int, ts timestamptz, "
                f"value numeric, quality text{pk})"
            )
            conn.commit()
            started = time.perf_counter()
            with conn.cursor() as cur, cur.copy("COPY baseline FROM STDIN") as copy:
                for start in range(0, len(lines), 5_000):
                    copy.write("".join(lines[start : start + 5_000]))
            conn.commit()
            out[label] = time.perf_counter() - started
            conn.execute("DROP TABLE baseline")
            conn.commit()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=10_000, help="rows per add_readings call")
    parser.add_argument("--batch", type=int, default=50_000, help="staging batch size")
    args = parser.parse_args()

    url = normalise_url(args.url)
    t_gen = time.perf_counter()
    meters, rows = make_rows(args.rows)
    _, edited = make_rows(args.rows, edit=True)
    _, next_day = make_rows(args.rows, day=1)
    print(
        f"generated {len(rows):,} rows for {meters:,} meters in "
        f"{time.perf_counter() - t_gen:.1f} s (not timed below)"
    )

    scratch = None
    if url.get_backend_name() == "postgresql":
        scratch = f"amihub_bench_{os.getpid()}"
        admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{scratch}"')
        url = url.set(database=scratch)
    else:
        path = Path(url.database or "")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    engine = make_engine(url)
    try:
        uid = setup(engine, meters)
        factory = SqlUnitOfWorkFactory(engine, staging_batch_size=args.batch)
        for label, data in (
            ("new rows (empty table)", rows),
            ("replay (all unchanged)", rows),
            ("edit 10 % (merge path)", edited),
            ("next day (table not empty)", next_day),
        ):
            elapsed, stats = ingest(factory, uid, meters, data, args.chunk)
            print(f"{label:26s} {len(data) / elapsed:>10,.0f} rows/s  ({elapsed:.2f} s)  {stats}")
        elapsed, count = small_messages(factory, uid, meters)
        print(
            f"{'small messages (96 rows)':26s} {count / elapsed:>10,.0f} msgs/s  "
            f"({elapsed / count * 1000:.2f} ms per message, one transaction each)"
        )
        if scratch is not None:
            plain = url.set(drivername="postgresql").render_as_string(hide_password=False)
            for label, elapsed in baseline_copy(plain, rows).items():
                print(
                    f"{'raw COPY text, ' + label:26s} {len(rows) / elapsed:>10,.0f} rows/s  "
                    f"({elapsed:.2f} s)"
                )
    finally:
        engine.dispose()
        if scratch is not None:
            admin_url = normalise_url(args.url).set(drivername="postgresql")
            with psycopg.connect(
                admin_url.render_as_string(hide_password=False), autocommit=True
            ) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')


if __name__ == "__main__":
    main()
