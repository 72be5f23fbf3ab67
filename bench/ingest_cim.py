"""Issue: bulk CIM MeterReadings import into PostgreSQL vs raw psycopg COPY.

Writes a CIM MeterReadings file of N interval readings (default 1,000,000:
10,417 meters x 96 quarter-hours), then in the same run and on the same server:

* amihub: ``pipeline.process`` of the file end to end (hardened streaming parse,
  XSD validation, reading checks, staging COPY, meter resolution, versioned
  upsert, message log, commit), in a child process whose peak RSS is reported;
* baseline: a raw psycopg ``COPY`` (text) of the same rows into a table of the
  same shape (PRIMARY KEY device, reading type, time), in its own child process.

Usage: ``python -m bench.ingest_cim [--readings N] [--keep FILE]``
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.common import peak_rss_mb, plain, run_child, scratch_database

START = datetime(2026, 1, 1, tzinfo=UTC)
PER_METER = 96


def _meters(readings: int) -> list[str]:
    return [f"BM{n:07d}" for n in range(-(-readings // PER_METER))]


def write_file(path: Path, readings: int) -> int:
    from hub.samples import write_meter_readings

    with path.open("w", encoding="utf-8") as f:
        return write_meter_readings(
            f, _meters(readings), START, PER_METER, registers=False, verb="created"
        )


def prepare(url: str, readings: int) -> None:
    """Schema, utility and meters (setup, not measured)."""
    from hub.bootstrap import bootstrap
    from hub.settings import load_settings

    app = bootstrap(load_settings(database_url=url), migrate=True)
    meters = _meters(readings)
    with psycopg_conn(url) as conn, conn.cursor() as cur:
        uid = cur.execute(
            "SELECT id FROM utility WHERE code = %s", (app.settings.default_utility,)
        ).fetchone()
        assert uid is not None
        with cur.copy(
            "COPY end_device (utility_id, mrid, serial_number, name, kind, state, created_at, "
            "updated_at) FROM STDIN"
        ) as copy:
            now = datetime.now(UTC)
            for m in meters:
                copy.write_row((uid[0], m, m, m, "meter", "installed", now, now))
        conn.commit()
    app.close()


def psycopg_conn(url: str):  # type: ignore[no-untyped-def]
    import psycopg

    return psycopg.connect(plain(url))


def child_amihub(url: str, path: str) -> None:
    from hub.bootstrap import bootstrap
    from hub.messages import InboundMessage
    from hub.settings import load_settings

    app = bootstrap(load_settings(database_url=url))
    t0 = time.perf_counter()
    outcome = app.pipeline.process(
        InboundMessage(source="bench", endpoint="bench:file", path=Path(path))
    )
    elapsed = time.perf_counter() - t0
    assert outcome.result == "OK", (outcome.result, outcome.errors[:3])
    print(
        json.dumps(
            {
                "seconds": elapsed,
                "stored": outcome.counts.get("stored", 0),
                "peak_rss_mb": peak_rss_mb(),
            }
        )
    )


def child_copy(url: str, readings: str) -> None:
    """Raw baseline: COPY (text) of the same rows into a keyed table of the same shape.

    The rows are built in memory first; only the COPY and its commit are timed.
    """
    from hub.samples import consumption

    n = int(readings)
    rows = [
        (device_id, 1, iv.ts, iv.value, "")
        for device_id, meter in enumerate(_meters(n), 1)
        for iv in consumption(meter, START, PER_METER)
    ]
    with psycopg_conn(url) as conn, conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE raw_reading (device_id integer, reading_type_id integer, "
            "ts timestamptz, value numeric, quality text, "
            "PRIMARY KEY (device_id, reading_type_id, ts))"
        )
        conn.commit()
        t0 = time.perf_counter()
        with cur.copy("COPY raw_reading FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        conn.commit()
        elapsed = time.perf_counter() - t0
        count = cur.execute("SELECT count(*) FROM raw_reading").fetchone()
    print(
        json.dumps(
            {
                "seconds": elapsed,
                "stored": count[0] if count else 0,
                "peak_rss_mb": peak_rss_mb(),
            }
        )
    )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench.ingest_cim")
    parser.add_argument("--readings", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, help="keep the generated file here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep or Path(tmp) / "meter_readings.xml"
        t0 = time.perf_counter()
        written = write_file(path, args.readings)
        size_mb = path.stat().st_size / 1e6
        print(
            f"CIM MeterReadings file: {written:,} readings, {size_mb:,.0f} MB "
            f"(written in {time.perf_counter() - t0:.1f} s)"
        )
        with scratch_database() as url:
            prepare(url, args.readings)
            ours = run_child("bench.ingest_cim", "--child-amihub", url, str(path))
        with scratch_database() as url:
            prepare(url, args.readings)
            raw = run_child("bench.ingest_cim", "--child-copy", url, str(written))
    ours_rate = ours["stored"] / ours["seconds"]
    raw_rate = raw["stored"] / raw["seconds"]
    print(
        f"amihub import (parse, validate, map, store): {ours_rate:>10,.0f} readings/s "
        f"({ours['stored']:,.0f} in {ours['seconds']:.2f} s, peak RSS "
        f"{ours['peak_rss_mb']:.0f} MB)"
    )
    print(
        f"raw psycopg COPY text, same rows:           {raw_rate:>10,.0f} readings/s "
        f"({raw['stored']:,.0f} in {raw['seconds']:.2f} s, peak RSS "
        f"{raw['peak_rss_mb']:.0f} MB)"
    )
    print(
        f"ratio amihub / raw COPY: {ours_rate / raw_rate:.2f}  "
        f"(target: >= 250,000 readings/s, peak < 300 MB)"
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child-amihub":
        child_amihub(sys.argv[2], sys.argv[3])
    elif len(sys.argv) > 1 and sys.argv[1] == "--child-copy":
        child_copy(sys.argv[2], sys.argv[3])
    else:
        main(sys.argv[1:])
