"""Issue 5: a CSV file dropped through the embedded SFTP server into PostgreSQL vs raw COPY.

Writes a CSV file of N readings (default 1,000,000: 10,417 meters x 96
quarter-hours of one local day, 15 January 2026 in Europe/Berlin) in one of the
shipped mapping layouts:

* ``long``: ``register-obis``, one reading per row (meter, OBIS code, local
  time, DST flag, value, unit, status), the rows of a meter together;
* ``wide``: ``wide-15min-de``, one row per meter and day with 100 value columns
  (decimal commas, Latin-1).

Then, in the same run and on the same server:

* amihub: a child process runs ``amihub serve``'s SFTP service
  (:class:`adapters.sftp.service.SftpService`: embedded server, inbox watcher,
  store ledger) against a scratch database; the parent uploads the file with
  paramiko under a temporary name and renames it (host key verified). Timed from
  the moment the rename returns to the moment the import committed, and from
  the watcher taking the file (move, SHA-256, ledger, parse, store, commit); the
  difference is the watcher's poll (0.05 s here; a file renamed from a temporary
  name needs no settling time, ``--settle`` only matters for other files).
  The peak RSS of that child (server + watcher + importer) is reported.
* baseline: a raw psycopg ``COPY`` (text) of the same rows into a table of the
  same shape (PRIMARY KEY device, reading type, time) in its own child process;
  the rows are built beforehand (in slices of 1,000,000 above that size, the
  building not timed), only the COPY and its commit are timed;
* up to 2,000,000 readings, the store's direct writer alone (the readings as
  blocks built beforehand, written and committed): the ceiling of the import.

Usage: ``python -m bench.sftp_csv [--readings N] [--layout long|wide|both]
[--settle S] [--no-baseline] [--no-gc-freeze] [--keep DIR]``
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from bench.common import peak_rss_mb, plain, scratch_database

PER_METER = 96
DAY = datetime(2026, 1, 15)  # local day (winter time: no DST change)
ZONE = ZoneInfo("Europe/Berlin")
MAPPINGS = {"long": "register-obis", "wide": "wide-15min-de"}
BASELINE_SLICE = 1_000_000


def _meters(readings: int) -> list[str]:
    return [f"BS{n:07d}" for n in range(-(-readings // PER_METER))]


def _value_text(meter_no: int, k: int, layout: str) -> str:
    """The value as the file writes it: a register (long) or an interval value (wide)."""
    if layout == "long":
        milli = 1_000_000 + meter_no * 100_000 + k * 257  # unique per meter and time
        return f"{milli // 1000}.{milli % 1000:03d}"
    milli = 100 + (meter_no * 7 + k * 13) % 900
    return f"0,{milli:03d}"


def _decimal(text: str) -> Decimal:
    return Decimal(text.replace(",", "."))


def _locals() -> list[datetime]:
    return [DAY + timedelta(minutes=15 * k) for k in range(PER_METER)]


def _instants(layout: str) -> list[datetime]:
    """UTC instants of the 96 values: register times (long) or interval ends (wide)."""
    start = DAY.replace(tzinfo=ZONE).astimezone(UTC)
    offset = 0 if layout == "long" else 1
    return [start + timedelta(minutes=15 * (k + offset)) for k in range(PER_METER)]


def _counts(readings: int) -> Iterator[tuple[int, str, int]]:
    """(meter number, serial, values of this meter): the last meter may be short."""
    left = readings
    for n, serial in enumerate(_meters(readings)):
        yield n, serial, min(PER_METER, left)
        left -= PER_METER


def write_file(path: Path, readings: int, layout: str) -> int:
    written = 0
    if layout == "long":
        stamps = [f"{t:%Y-%m-%d %H:%M:%S}" for t in _locals()]
        with path.open("w", encoding="utf-8", newline="") as f:
            f.write("meter,obis,timestamp,dst,value,unit,status\n")
            for n, serial, count in _counts(readings):
                f.writelines(
                    f"{serial},1-0:1.8.0*255,{stamps[k]},W,{_value_text(n, k, layout)},kWh,OK\n"
                    for k in range(count)
                )
                written += count
        return written
    columns = 100
    with path.open("w", encoding="latin-1", newline="") as f:
        f.write("Zählernummer;Datum;" + ";".join(f"W{i:03d}" for i in range(1, 101)) + "\n")
        day = f"{DAY:%d.%m.%Y}"
        for n, serial, count in _counts(readings):
            values = [_value_text(n, k, layout) for k in range(count)]
            values += [""] * (columns - count)
            f.write(f"{serial};{day};{';'.join(values)}\n")
            written += count
    return written


def prepare(url: str, readings: int) -> None:
    """Schema, utility and meters (setup, not measured)."""
    import psycopg

    from hub.bootstrap import bootstrap
    from hub.settings import load_settings

    app = bootstrap(load_settings(database_url=url), migrate=True)
    with psycopg.connect(plain(url)) as conn, conn.cursor() as cur:
        uid = cur.execute(
            "SELECT id FROM utility WHERE code = %s", (app.settings.default_utility,)
        ).fetchone()
        assert uid is not None
        with cur.copy(
            "COPY end_device (utility_id, mrid, serial_number, name, kind, state, created_at, "
            "updated_at) FROM STDIN"
        ) as copy:
            now = datetime.now(UTC)
            for m in _meters(readings):
                copy.write_row((uid[0], f"mrid-{m}", m, m, "meter", "installed", now, now))
        conn.commit()
        cur.execute("ANALYZE end_device")  # a fleet's table has statistics; a fresh COPY not yet
    app.close()


# ----------------------------------------------------------------------- amihub child


def child_amihub(
    url: str, workdir: str, mapping: str, settle: str, client_key: str, freeze: str = "0"
) -> None:
    """Serve SFTP (the ``amihub serve`` service) until one file is processed.

    Prints ``{"port", "host_key"}`` when listening; reads the monotonic time at
    which the upload completed from stdin; prints the timings last.
    """
    import paramiko

    from adapters.sftp.inbox import InboxFile, Outcome
    from adapters.sftp.service import SftpService
    from hub.bootstrap import bootstrap
    from hub.settings import SftpPartnerSettings, SftpSettings, load_settings

    logging.getLogger("paramiko").setLevel(logging.CRITICAL)  # client hang-ups are normal
    app = bootstrap(load_settings(database_url=url))
    work = Path(workdir)
    paramiko.ECDSAKey.generate(bits=256).write_private_key_file(str(work / "host_key"))
    settings = SftpSettings(
        enabled=True,
        host="127.0.0.1",
        port=0,
        host_key=work / "host_key",
        root=work / "sftp",
        state_dir=work / "state",
        settle_seconds=float(settle),
        poll_interval=0.05,
        partners=[SftpPartnerSettings(name="bench", authorized_keys=[client_key], mapping=mapping)],
    )
    service = SftpService(
        settings, app.uow_factory, bus=app.bus, default_utility=app.settings.default_utility
    )
    if freeze == "1":  # as `amihub serve` (hub.serve.run_services) does before it starts
        gc.collect()
        gc.freeze()
    service.start()
    watcher = service.watcher
    assert watcher is not None
    times: dict[str, float] = {}
    outcome: list[Outcome] = []
    done = threading.Event()
    process, handler = watcher.process, watcher.handler

    def timed_process(partner: Any, path: Path) -> Any:
        times.setdefault("taken", time.monotonic())
        times.setdefault("cpu_taken", time.process_time())
        result = process(partner, path)
        times["finished"] = time.monotonic()
        done.set()
        return result

    def timed_handler(item: InboxFile) -> Outcome:
        times["apply_start"] = time.monotonic()
        out = handler(item)
        times["committed"] = time.monotonic()
        times["cpu_committed"] = time.process_time()
        outcome.append(out)
        return out

    watcher.process = timed_process  # type: ignore[method-assign]
    watcher.handler = timed_handler
    host = paramiko.ECDSAKey.from_private_key_file(str(settings.host_key))
    print(json.dumps({"port": service.port, "host_key": f"{host.get_name()} {host.get_base64()}"}))
    sys.stdout.flush()
    uploaded = float(sys.stdin.readline())
    if not done.wait(timeout=3600):
        raise SystemExit("the file was not processed within an hour")
    service.stop()
    report = outcome[0].report if outcome else "no outcome"
    if not outcome or not outcome[0].applied:
        raise SystemExit(f"not applied:\n{report}")
    stored = next(
        int(v) for k, _, v in (x.partition(": ") for x in report.splitlines()) if k == "stored"
    )
    print(
        json.dumps(
            {
                "uploaded": uploaded,
                "settle_and_poll": times["taken"] - uploaded,
                "taken_to_commit": times["committed"] - times["taken"],
                "taken_to_apply": times["apply_start"] - times["taken"],
                "upload_to_commit": times["committed"] - uploaded,
                "apply": times["committed"] - times["apply_start"],
                "cpu": times["cpu_committed"] - times["cpu_taken"],
                "stored": stored,
                "peak_rss_mb": peak_rss_mb(),
            }
        )
    )


def run_amihub(
    url: str, path: Path, layout: str, settle: float, freeze: bool = False
) -> dict[str, float]:
    """Start the SFTP child, upload ``path`` with paramiko, return the child's figures."""
    import paramiko

    with tempfile.TemporaryDirectory(prefix="issue5-bench-sftp-") as tmp:
        client_key = paramiko.ECDSAKey.generate(bits=256)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.sftp_csv",
                "--child-amihub",
                url,
                tmp,
                MAPPINGS[layout],
                str(settle),
                f"{client_key.get_name()} {client_key.get_base64()}",
                "1" if freeze else "0",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdin is not None
        assert proc.stdout is not None
        try:
            hello = json.loads(proc.stdout.readline())
            known = Path(tmp) / "known_hosts"
            known.write_text(f"[127.0.0.1]:{hello['port']} {hello['host_key']}\n")
            client = paramiko.SSHClient()
            client.load_host_keys(str(known))
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            client.connect(
                "127.0.0.1",
                hello["port"],
                username="bench",
                pkey=client_key,
                look_for_keys=False,
                allow_agent=False,
                timeout=30,
            )
            t0 = time.monotonic()
            with client.open_sftp() as sftp:
                sftp.put(str(path), f"/inbox/{path.name}.part")
                sftp.rename(f"/inbox/{path.name}.part", f"/inbox/{path.name}")
                uploaded = time.monotonic()
            client.close()
            proc.stdin.write(f"{uploaded}\n")
            proc.stdin.flush()
            out, _ = proc.communicate(timeout=3600)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if proc.returncode != 0:
            raise SystemExit(f"the SFTP child failed ({proc.returncode}):\n{out}")
        figures = dict(json.loads(out.strip().splitlines()[-1]))
        figures["upload_seconds"] = uploaded - t0
        return figures


# ----------------------------------------------------------------------- baseline child


def _baseline_rows(readings: int, layout: str) -> Iterator[list[tuple[Any, ...]]]:
    instants = _instants(layout)
    rows: list[tuple[Any, ...]] = []
    for n, _serial, count in _counts(readings):
        rows.extend(
            (n + 1, 1, instants[k], _decimal(_value_text(n, k, layout)), "") for k in range(count)
        )
        if len(rows) >= BASELINE_SLICE:
            yield rows
            rows = []
    if rows:
        yield rows


def child_copy(url: str, readings: str, layout: str) -> None:
    """Raw COPY (text) of the same rows into a keyed table of the same shape."""
    import psycopg

    n = int(readings)
    slices = _baseline_rows(n, layout)
    first = next(slices)  # built before the clock starts (all of them up to 1,000,000)
    elapsed = 0.0
    with psycopg.connect(plain(url)) as conn, conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE raw_reading (device_id integer, reading_type_id integer, "
            "ts timestamptz, value numeric, quality text, "
            "PRIMARY KEY (device_id, reading_type_id, ts))"
        )
        conn.commit()
        with cur.copy("COPY raw_reading FROM STDIN") as copy:
            rows: list[tuple[Any, ...]] | None = first
            while rows is not None:
                t0 = time.perf_counter()
                for row in rows:
                    copy.write_row(row)
                elapsed += time.perf_counter() - t0
                rows = next(slices, None)  # not timed
            t0 = time.perf_counter()
        conn.commit()
        elapsed += time.perf_counter() - t0
        count = cur.execute("SELECT count(*) FROM raw_reading").fetchone()
    print(
        json.dumps(
            {"seconds": elapsed, "stored": count[0] if count else 0, "peak_rss_mb": peak_rss_mb()}
        )
    )


def child_writer(url: str, readings: str, layout: str) -> None:
    """The store alone: the same readings as blocks built beforehand (no file, no
    parsing), handed to the store as every writer does (StoreMeterReadings through the
    bus; new readings: the direct path), written and committed: the ceiling of the
    import."""
    from hub.bootstrap import bootstrap
    from hub.settings import load_settings
    from mdm.commands import StoreMeterReadings
    from mdm.handling import HandlerContext
    from mdm.model import DeviceRef
    from mdm.ports import MeterItem, ReadingBlock, ReadingFeedChunk

    code = "0.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0"  # what the OBIS table gives for 1.8.0
    if layout == "wide":
        code = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
    instants = _instants(layout)
    n = int(readings)
    blocks = [
        ReadingBlock(
            m + 1,
            code,
            [(instants[k], _decimal(_value_text(m, k, layout)), "") for k in range(count)],
        )
        for m, _serial, count in _counts(n)
    ]
    refs = {m + 1: DeviceRef(name=s, name_type="SerialNumber") for m, s, _ in _counts(n)}
    app = bootstrap(load_settings(database_url=url))
    with app.uow_factory() as uow:
        utility = uow.utilities.get(app.settings.default_utility)
        assert utility is not None
        assert utility.id is not None
        step = 5000 // PER_METER + 1
        chunks = [
            ReadingFeedChunk(part, [MeterItem(b.item, refs[b.item]) for b in part])
            for part in (blocks[i : i + step] for i in range(0, len(blocks), step))
        ]
        t0 = time.perf_counter()
        ctx = HandlerContext(actor="bench", now=datetime.now(UTC))
        stored = app.bus.handle(StoreMeterReadings(utility.id, chunks), uow, ctx).stats.stored
        uow.commit()
        elapsed = time.perf_counter() - t0
    print(json.dumps({"seconds": elapsed, "stored": stored, "peak_rss_mb": peak_rss_mb()}))


def _run_child(*args: str) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.sftp_csv", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{args[0]} failed:\n{proc.stdout}\n{proc.stderr}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _run_copy(url: str, readings: int, layout: str) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.sftp_csv", "--child-copy", url, str(readings), layout],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"baseline failed:\n{proc.stdout}\n{proc.stderr}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


# ----------------------------------------------------------------------- main


def _load() -> str:
    """The 1-minute load average now (the machine is shared: say how busy it was)."""
    return f"{os.getloadavg()[0]:.2f}"


def bench_layout(args: argparse.Namespace, layout: str, folder: Path) -> dict[str, Any]:
    path = folder / f"issue5-bench-{layout}-{args.readings}.csv"
    t0 = time.perf_counter()
    written = write_file(path, args.readings, layout)
    size_mb = path.stat().st_size / 1e6
    print(
        f"\n[{layout}] {MAPPINGS[layout]} CSV: {written:,} readings, {size_mb:,.0f} MB "
        f"(written in {time.perf_counter() - t0:.1f} s)"
    )
    with scratch_database("amihub_bench_sftp") as url:
        prepare(url, args.readings)
        load_before = _load()
        ours = run_amihub(url, path, layout, args.settle, not args.no_gc_freeze)
        load_ours = f"{load_before}-{_load()}"
    if not args.keep:
        path.unlink()
    rate = ours["stored"] / ours["taken_to_commit"]
    rate_total = ours["stored"] / ours["upload_to_commit"]
    out: dict[str, Any] = {
        "layout": layout,
        "mapping": MAPPINGS[layout],
        "size_mb": size_mb,
        "rate": rate_total,
        "seconds": ours["upload_to_commit"],
        "cpu": ours["cpu"],
        "rss": ours["peak_rss_mb"],
        "load": load_ours,
    }
    print(
        f"  upload (paramiko, not timed): {ours['upload_seconds']:.1f} s; rename -> file taken "
        f"{ours['settle_and_poll']:.2f} s (poll 0.05 s; settle_seconds = {args.settle:g} "
        "applies to files not renamed from a temporary name); file taken -> import starts "
        f"{ours['taken_to_apply']:.2f} s (move, SHA-256, ledger)"
    )
    print(
        f"  amihub, file taken -> commit:      {rate:>10,.0f} readings/s "
        f"({ours['stored']:,.0f} in {ours['taken_to_commit']:.2f} s, CPU {ours['cpu']:.2f} s; "
        f"peak RSS {ours['peak_rss_mb']:.0f} MB; load {load_ours})"
    )
    print(
        f"  amihub, upload done -> commit:     {rate_total:>10,.0f} readings/s "
        f"({ours['upload_to_commit']:.2f} s, waiting for the watcher included)"
    )
    if args.no_baseline:
        return out
    with scratch_database("amihub_bench_sftp") as url:
        load_before = _load()
        raw = _run_copy(url, args.readings, layout)
        load_raw = f"{load_before}-{_load()}"
    raw_rate = raw["stored"] / raw["seconds"]
    if args.readings <= 2_000_000:  # blocks built beforehand: memory grows with them
        with scratch_database("amihub_bench_sftp") as url:
            prepare(url, args.readings)
            load_before = _load()
            ceiling = _run_child("--child-writer", url, str(args.readings), layout)
            load_writer = f"{load_before}-{_load()}"
        writer_rate = ceiling["stored"] / ceiling["seconds"]
        out["writer_rate"] = writer_rate
        print(
            f"  store's direct writer alone:       {writer_rate:>10,.0f} readings/s "
            f"({ceiling['seconds']:.2f} s; blocks built beforehand, no file: the ceiling; "
            f"load {load_writer})"
        )
    print(
        f"  raw psycopg COPY text, same rows:  {raw_rate:>10,.0f} readings/s "
        f"({raw['stored']:,.0f} in {raw['seconds']:.2f} s; load {load_raw})"
    )
    print(
        f"  ratio amihub / raw COPY: {rate / raw_rate:.2f} from the file taken, "
        f"{rate_total / raw_rate:.2f} from the upload done  (target >= 0.50; peak < 200 MB)"
    )
    out.update(raw_rate=raw_rate, ratio=rate_total / raw_rate, raw_load=load_raw)
    return out


def _summary(results: list[dict[str, Any]], readings: int) -> None:
    print(f"\nsummary ({readings:,} readings; amihub = upload done -> commit):")
    print(
        "  layout | file | amihub readings/s | raw COPY/s | ratio | CPU of the import | "
        "peak RSS | load (amihub; raw)"
    )
    for r in results:
        raw = f"{r['raw_rate']:,.0f}" if "raw_rate" in r else "-"
        ratio = f"{r['ratio']:.2f}" if "ratio" in r else "-"
        print(
            f"  {r['layout']} {r['mapping']} | {r['size_mb']:,.0f} MB | {r['rate']:,.0f} "
            f"({r['seconds']:.2f} s) | {raw} | {ratio} | {r['cpu']:.2f} s | {r['rss']:.0f} MB | "
            f"{r['load']}; {r.get('raw_load', '-')}"
        )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench.sftp_csv")
    parser.add_argument("--readings", type=int, default=1_000_000)
    parser.add_argument("--layout", choices=("long", "wide", "both"), default="both")
    parser.add_argument("--settle", type=float, default=2.0, help="watcher settle_seconds")
    parser.add_argument("--no-baseline", action="store_true", help="skip the raw COPY")
    parser.add_argument(
        "--no-gc-freeze",
        action="store_true",
        help="do not gc.freeze() the serving process (`amihub serve` does, before it starts)",
    )
    parser.add_argument("--keep", type=Path, help="write (and keep) the CSV files here")
    args = parser.parse_args(argv)
    layouts = ("long", "wide") if args.layout == "both" else (args.layout,)
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="issue5-bench-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for layout in layouts:
            results.append(bench_layout(args, layout, folder))
    _summary(results, args.readings)


if __name__ == "__main__":
    os.environ.setdefault("AMIHUB_LOG_LEVEL", "WARNING")
    if len(sys.argv) > 1 and sys.argv[1] == "--child-amihub":
        child_amihub(*sys.argv[2:8])
    elif len(sys.argv) > 1 and sys.argv[1] == "--child-writer":
        child_writer(sys.argv[2], sys.argv[3], sys.argv[4])
    elif len(sys.argv) > 1 and sys.argv[1] == "--child-copy":
        child_copy(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        main(sys.argv[1:])
