"""Issue 13: validate one month of 15-minute data of N meters in PostgreSQL, with faults
planted at known places, beside a plain ``COPY ... TO`` of the same rows in the same run.

The data are made in the database (``generate_series``): a week of history (the spike
rule's medians) and ``--days`` days validated, 96 quarter-hours a day and a daily
register at midnight (UTC) that is the running sum of the profile. Faults are planted
before the registers are summed, one kind on every tenth meter (meter number modulo 10):

* 1: four quarter-hours deleted (missing, 1 finding)
* 2: one quarter-hour 9.0 kWh (limits and spike, 2 findings)
* 3: twelve quarter-hours of zero (zero run, 1 finding)
* 4: one quarter-hour of -0.5 kWh (negative, 1 finding)
* 5: the register 100 kWh lower from one midnight on (register backwards, 1 finding)
* 6: the register 1 kWh higher from one midnight on (register vs profile, 1 finding)

The run validates every meter with the nine rules of amihub's rule kinds through the
handler (one transaction, committed); the findings must equal the planted faults.
Printed: readings validated (current versions of the period), seconds, readings/s, the
COPY of the same rows (seconds, rows/s) and the ratio validation / COPY.

Usage: ``python -m bench.vee [--meters 1000] [--days 30]``
"""

from __future__ import annotations

import argparse
import io
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from bench.common import plain, scratch_database

PROFILE = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
REGISTER = "0.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
START = datetime(2026, 3, 1, tzinfo=UTC)
HISTORY = timedelta(weeks=1)

RULES: list[dict[str, Any]] = [
    {"name": "missing", "kind": "missing", "reading_type": PROFILE},
    {"name": "high", "kind": "limits", "reading_type": PROFILE, "maximum": 5},
    {"name": "spike", "kind": "spike", "reading_type": PROFILE, "factor": 10, "weeks": 1,
     "min_samples": 1},
    {"name": "zero", "kind": "zero_run", "reading_type": PROFILE, "max_intervals": 8},
    {"name": "negative", "kind": "negative", "reading_type": PROFILE},
    {"name": "flagged", "kind": "meter_flagged", "reading_type": PROFILE},
    {"name": "future", "kind": "future", "reading_type": PROFILE},
    {"name": "backwards", "kind": "register_backwards", "reading_type": REGISTER},
    {"name": "register-profile", "kind": "register_vs_profile", "reading_type": REGISTER,
     "profile_reading_type": PROFILE, "tolerance": "0.001"},
]  # fmt: skip


def mrid(n: int) -> str:
    return f"MTR-{n:06d}"


def fault_day(n: int, days: int) -> datetime:
    """The day of meter n's fault: spread over the month, never its first or last day."""
    return START + timedelta(days=1 + n % (days - 2))


def planted(meters: int, days: int) -> set[tuple[str, str, datetime, datetime, int]]:
    found: set[tuple[str, str, datetime, datetime, int]] = set()
    q = timedelta(minutes=15)
    for n in range(meters):
        day, m = fault_day(n, days), mrid(n)
        at = day + timedelta(hours=10)
        kind = n % 10
        if kind == 1:
            found.add((m, "missing", at, at + 3 * q, 4))
        elif kind == 2:
            found |= {(m, "high", at, at, 1), (m, "spike", at, at, 1)}
        elif kind == 3:
            found.add((m, "zero", at, at + 11 * q, 12))
        elif kind == 4:
            found.add((m, "negative", at, at, 1))
        elif kind == 5:
            found.add((m, "backwards", day, day, 1))
        elif kind == 6:
            found.add((m, "register-profile", day, day, 1))
    return found


def prepare(url: str, meters: int, days: int) -> None:
    from adapters.sql import make_engine, upgrade

    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    first, end = START - HISTORY, START + timedelta(days=days)
    with psycopg.connect(plain(url)) as conn:
        conn.execute(
            "INSERT INTO utility (code, name, created_at) VALUES ('DEFAULT', 'bench', now())"
        )
        conn.execute(
            "INSERT INTO end_device (utility_id, mrid, kind, state, created_at, updated_at) "
            "SELECT 1, 'MTR-' || lpad(n::text, 6, '0'), 'meter', 'installed', now(), now() "
            "FROM generate_series(0, %s - 1) n",
            (meters,),
        )
        conn.execute("INSERT INTO reading_type (code) VALUES (%s), (%s)", (PROFILE, REGISTER))
        conn.execute(
            "CREATE TEMP TABLE fault AS SELECT d.id AS device_id, n %% 10 AS kind, "
            "%s::timestamptz + make_interval(days => 1 + n %% (%s - 2)) AS day "
            "FROM end_device d JOIN generate_series(0, %s - 1) n "
            "ON d.mrid = 'MTR-' || lpad(n::text, 6, '0')",
            (START, days, meters),
        )
        conn.execute(
            "CREATE UNLOGGED TABLE profile AS SELECT d.id AS device_id, ts, "
            "(0.100 + 0.025 * (extract(hour FROM ts)::int %% 16))::numeric AS value "
            "FROM end_device d, generate_series(%s::timestamptz + interval '15 minutes', "
            "%s::timestamptz, interval '15 minutes') ts",
            (first, end),
        )
        at = "f.day + interval '10 hours'"
        conn.execute(
            "DELETE FROM profile p USING fault f WHERE p.device_id = f.device_id AND f.kind = 1 "
            f"AND p.ts >= {at} AND p.ts < {at} + interval '1 hour'"
        )
        for kind, value, length in ((2, "9.0", 1), (3, "0", 12), (4, "-0.5", 1)):
            conn.execute(
                f"UPDATE profile p SET value = {value} FROM fault f WHERE p.device_id = "
                f"f.device_id AND f.kind = {kind} AND p.ts >= {at} "
                f"AND p.ts < {at} + interval '{15 * length} minutes'"
            )
        conn.execute(
            "INSERT INTO reading SELECT device_id, 1, ts, value, '', 1, now() FROM profile"
        )
        conn.execute(
            "INSERT INTO reading SELECT s.device_id, 2, s.ts, s.total + CASE "
            "WHEN f.kind = 5 AND s.ts >= f.day THEN -100 "
            "WHEN f.kind = 6 AND s.ts >= f.day THEN 1 ELSE 0 END, '', 1, now() "
            "FROM (SELECT device_id, ts, 1000 + sum(value) OVER (PARTITION BY device_id "
            "ORDER BY ts) AS total FROM profile) s JOIN fault f ON f.device_id = s.device_id "
            "WHERE extract(hour FROM s.ts) = 0 AND extract(minute FROM s.ts) = 0"
        )
        conn.execute("DROP TABLE profile")
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE reading")


def copy_rows(url: str, start: datetime, end: datetime) -> tuple[int, float]:
    """A plain COPY of the period's rows to the client (the read limit)."""
    with psycopg.connect(plain(url)) as conn:
        t = time.perf_counter()
        rows = 0
        sink = io.BytesIO()
        with conn.cursor().copy(
            "COPY (SELECT * FROM reading WHERE ts > %s AND ts <= %s) TO STDOUT", (start, end)
        ) as copy:
            for data in copy:
                sink.write(data)
                rows += bytes(data).count(b"\n")
                if sink.tell() > 1 << 24:
                    sink.seek(0)
                    sink.truncate()
        return rows, time.perf_counter() - t


def validate(url: str, start: datetime, end: datetime) -> tuple[Any, float, set[Any]]:
    from hub.bootstrap import bootstrap
    from hub.settings import load_settings
    from hub.vee_settings import VeeSettings
    from mdm.handlers import HandlerContext
    from mdm.vee.commands import ValidateReadings

    settings = load_settings(database_url=url, vee=VeeSettings(rules=RULES))
    app = bootstrap(settings)
    try:
        t = time.perf_counter()
        with app.uow_factory() as uow:
            run = app.bus.handle(
                ValidateReadings(1, "DEFAULT", start, end, settings.vee.rules_for("DEFAULT")),
                uow,
                HandlerContext("bench", datetime.now(UTC)),
            )
            uow.commit()
        seconds = time.perf_counter() - t
        with app.uow_factory() as uow:
            found = {
                (f.device_mrid, f.rule, f.ts, f.ts_end, f.intervals)
                for f in uow.vee.findings(run.id)
            }
    finally:
        app.close()
    return run, seconds, found


def estimate(url: str, start: datetime, end: datetime, method: str) -> tuple[Any, float, set[Any]]:
    """An estimation run over the period (after the validation rounds): the planted gaps
    of four quarter-hours are the only ones."""
    from hub.bootstrap import bootstrap
    from hub.settings import load_settings
    from mdm.handlers import HandlerContext
    from mdm.vee.commands import EstimateReadings
    from mdm.vee.estimation import EstimationMethod

    app = bootstrap(load_settings(database_url=url))
    try:
        t = time.perf_counter()
        with app.uow_factory() as uow:
            run = app.bus.handle(
                EstimateReadings(
                    1, start, end, (PROFILE,), 4, EstimationMethod(method),
                    history_weeks=1, registers=((PROFILE, REGISTER),),
                ),
                uow,
                HandlerContext("bench", datetime.now(UTC)),
            )  # fmt: skip
            uow.commit()
        seconds = time.perf_counter() - t
        with app.uow_factory() as uow:
            found = {
                (f.device_mrid, f.ts, f.ts_end, f.intervals, f.quality)
                for f in uow.vee.findings(run.id)
            }
    finally:
        app.close()
    return run, seconds, found


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.vee")
    parser.add_argument("--meters", type=int, default=1000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    start, end = START, START + timedelta(days=args.days)
    with scratch_database("amihub_bench_vee") as url:
        t = time.perf_counter()
        prepare(url, args.meters, args.days)
        print(f"prepared {args.meters} meters x {args.days} days (+1 week of history) in "
              f"{time.perf_counter() - t:.1f}s")  # fmt: skip
        expected = planted(args.meters, args.days)
        for n in range(args.rounds):  # alternate: a noisy neighbour hurts both alike
            rows, copy_s = copy_rows(url, start, end)
            run, seconds, found = validate(url, start, end)
            if found != expected:
                missing, extra = expected - found, found - expected
                raise SystemExit(
                    f"findings differ from the planted faults: {len(missing)} not found "
                    f"(e.g. {sorted(missing)[:3]}), {len(extra)} unexpected "
                    f"(e.g. {sorted(extra)[:3]})"
                )
            print(
                f"round {n + 1}: validated {run.readings:,} readings of {run.meters:,} meters "
                f"in {seconds:.2f}s = {run.readings / seconds:,.0f} readings/s, "
                f"{run.findings:,} findings = the planted faults; "
                f"COPY TO of the same {rows:,} rows {copy_s:.2f}s = {rows / copy_s:,.0f} rows/s; "
                f"validation / COPY = {seconds / copy_s:.1f}x"
            )
            for c in run.rules:
                print(f"    {c.rule:18} {c.findings:6,} finding(s)")
        q = timedelta(minutes=15)
        gaps = {(m, a, b, n, "3.8.0") for m, rule, a, b, n in expected if rule == "missing"}
        run, seconds, found = estimate(url, start, end, "linear")
        if found != gaps or run.marked != 4 * len(gaps):
            raise SystemExit(
                f"estimation: {len(found)} finding(s), {run.marked} estimated; expected "
                f"{len(gaps)} gaps of 4 filled (e.g. {sorted(found ^ gaps)[:3]}, {q})"
            )
        print(
            f"estimated (linear) {run.marked:,} intervals in {len(gaps):,} gaps of "
            f"{run.meters:,} meters over {run.readings:,} readings in {seconds:.2f}s "
            f"= {run.readings / seconds:,.0f} readings/s"
        )


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
