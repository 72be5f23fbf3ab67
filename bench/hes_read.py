"""Issue 6: read the daily load profile (96 intervals) + the +A register of N simulated
meters into PostgreSQL, with security suite 0 on, beside a bare gurux client loop.

In one run, on this machine (simulators and engines share its cores):

* simulators: two child processes (``python -m hes simulate``) with the same seed,
  one fleet HLS-GMAC (authenticated and encrypted), one LLS (plain), each on one
  shared port (meter = WRAPPER wPort);
* ``secured``: one engine (this process' child) reads the HLS fleet into PostgreSQL;
* ``plain``: the same for the LLS fleet;
* ``bare gurux``: gurux's own GXDLMSClient, LLS, its own AARQ/AARE, GET +A and
  readRowsByRange of the day, release; same concurrency, no storage, no checks;
* ``secured, 2 engines``: two engine processes, half of the meters each.
* ``--engines-amqp N``: instead, the secured read through RabbitMQ: ``amihub engine``
  processes (1, then N) take jobs of ``--job-meters`` meters from ``amihub.hes.jobs``
  and store into PostgreSQL; the submitter (``amihub engine read``'s
  ``fleet_read``) waits for every job's reply.

Usage: ``python -m bench.hes_read [--meters N] [--concurrency C] [--no-store]
[--engines-amqp N [--job-meters M]]`` (without PostgreSQL, ``--no-store`` counts
rows instead of storing them; ``--engines-amqp`` needs PostgreSQL and RabbitMQ,
``AMIHUB_TEST_AMQP_URL``).
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

SEED = 6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _window() -> tuple[datetime, datetime]:
    from hes.simulator.meter import interval_end, interval_index

    end = interval_end(interval_index(datetime.now(UTC)) - 1)
    return end - timedelta(days=1), end


def _start_simulator(meters: int, port: int, security: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hes",
            "simulate",
            "--meters",
            str(meters),
            "--base-port",
            str(port),
            "--seed",
            str(SEED),
            "--security",
            security,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("simulator did not start")


def prepare_store(url: str, meters: int) -> None:
    """Schema, utility and devices (setup, not measured)."""
    from adapters.sql.engine import make_engine
    from adapters.sql.migrate import upgrade
    from hes.simulator.meter import make_meter
    from mdm.model import Utility

    engine = make_engine(url)
    upgrade(engine)
    from adapters.sql.uow import SqlUnitOfWorkFactory

    with SqlUnitOfWorkFactory(engine)() as uow:
        uow.utilities.add(Utility("BENCH", "Bench Power"))
        uow.commit()
    import psycopg

    from bench.common import plain

    with psycopg.connect(plain(url)) as conn, conn.cursor() as cur:
        row = cur.execute("SELECT id FROM utility WHERE code = 'BENCH'").fetchone()
        assert row is not None
        now = datetime.now(UTC)
        with cur.copy(
            "COPY end_device (utility_id, mrid, serial_number, kind, state, "
            "created_at, updated_at) FROM STDIN"
        ) as copy:
            for i in range(meters):
                serial = make_meter(i, SEED).serial
                copy.write_row((row[0], f"MTR-{serial}", serial, "meter", "installed", now, now))
    engine.dispose()


def child_engine(args: list[str]) -> None:
    """One engine process: read meters [lo, hi) of a fleet, store (or count), print JSON."""
    port, security, lo, hi, concurrency, url = (
        int(args[0]),
        args[1],
        int(args[2]),
        int(args[3]),
        int(args[4]),
        args[5],
    )
    from hes.cli import simulated_targets
    from hes.engine import EnginePolicy, MeterOutcome, ReadCommand, ReadingEngine
    from hub.headend_store import MdmReadingSink

    targets = simulated_targets(hi, port, SEED, security)[lo:hi]
    start, end = _window()
    sink: Any
    if url == "-":
        from hes.cli import _CountingSink

        sink = _CountingSink()
    else:
        from adapters.sql.engine import make_engine
        from adapters.sql.uow import SqlUnitOfWorkFactory

        sink = MdmReadingSink(SqlUnitOfWorkFactory(make_engine(url)), "BENCH")
    engine = ReadingEngine(
        sink, policy=EnginePolicy(concurrency=concurrency, timeout=10.0, batch_meters=500)
    )
    report = engine.run(
        ReadCommand(
            targets, start, end, registers=("1.0.1.8.0.255",), profile_channels=("1.0.1.8.0.255",)
        )
    )
    print(
        json.dumps(
            {
                "seconds": report.seconds,
                "done": report.count(MeterOutcome.DONE),
                "stored": report.stats.total,
            }
        )
    )


def child_bare(args: list[str]) -> None:
    """gurux's own client, LLS, no storage: the baseline."""
    port, meters, concurrency = int(args[0]), int(args[1]), int(args[2])
    from gurux_dlms import GXByteBuffer, GXDLMSClient, GXReplyData
    from gurux_dlms.enums import Authentication, InterfaceType
    from gurux_dlms.objects import GXDLMSProfileGeneric, GXDLMSRegister

    from hes.simulator.meter import make_meter

    start, end = _window()

    def exchange(sock: socket.socket, client: Any, frame: Any, reply: Any) -> None:
        sock.sendall(bytes(frame))
        while True:
            data = bytearray()
            while len(data) < 8:
                data += sock.recv(8 - len(data))
            length = int.from_bytes(data[6:8], "big")
            while len(data) < 8 + length:
                data += sock.recv(8 + length - len(data))
            client.getData(GXByteBuffer(data), reply)
            if not reply.isMoreData():
                return
            sock.sendall(bytes(client.receiverReady(reply)))

    def read(i: int) -> int:
        m = make_meter(i, SEED)
        client = GXDLMSClient(
            True, 1, i + 1, Authentication.LOW, m.password.decode(), InterfaceType.WRAPPER
        )
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            reply = GXReplyData()
            for f in client.aarqRequest():
                exchange(sock, client, f, reply)
            client.parseAareResponse(reply.data)
            reg = GXDLMSRegister("1.0.1.8.0.255")
            for attr in (3, 2):
                reply = GXReplyData()
                exchange(sock, client, client.read(reg, attr)[0], reply)
                client.updateValue(reg, attr, reply.value)
            pg = GXDLMSProfileGeneric("1.0.99.1.0.255")
            reply = GXReplyData()
            exchange(sock, client, client.readRowsByRange(pg, start, end)[0], reply)
            rows = len(reply.value)
            reply = GXReplyData()
            exchange(sock, client, client.releaseRequest()[0], reply)
        return rows

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        rows = sum(pool.map(read, range(meters)))
    print(json.dumps({"seconds": time.perf_counter() - t0, "rows": rows}))


def _run_children(commands: list[list[str]]) -> list[dict[str, Any]]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.hes_read", *c],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for c in commands
    ]
    out = []
    for p in procs:
        stdout, stderr = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"child failed:\n{stdout}\n{stderr}")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def amqp_engines(n: int, c: int, engines: int, job_meters: int) -> None:
    """The secured read through RabbitMQ with 1, then ``engines``, engine processes."""
    import os
    import signal
    import tempfile
    import uuid
    from pathlib import Path

    from adapters.dlms.engine_worker import fleet_read
    from bench.common import scratch_database
    from hes.cli import fleet_manifest
    from hes.simulator.fleet import Fleet
    from hub.bootstrap import open_store
    from hub.settings import load_settings

    amqp_url = os.environ.get("AMIHUB_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
    port = _free_port()
    sim = _start_simulator(n, port, "hls")
    work = Path(tempfile.mkdtemp(prefix="amihub-bench-engines-"))
    manifest = work / "fleet.json"
    manifest.write_text(json.dumps(fleet_manifest(Fleet.build(n, port, SEED))))
    start, end = _window()
    rows: list[tuple[int, float, dict[str, int], dict[str, int]]] = []
    try:
        for k in sorted({1, engines}):
            with scratch_database("amihub_hes") as url:
                prepare_store(url, n)
                env = {key: v for key, v in os.environ.items() if not key.startswith("AMIHUB_")}
                env.update(
                    {
                        "AMIHUB_CONFIG": "",  # empty: no settings file
                        "AMIHUB_DATABASE_URL": url,
                        "AMIHUB_DEFAULT_UTILITY": "BENCH",
                        "AMIHUB_LOG_LEVEL": "WARNING",
                        "AMIHUB_AMQP__URL": amqp_url,
                        "AMIHUB_HES__MANIFEST": str(manifest),
                        "AMIHUB_HES__SIMULATED_SEED": str(SEED),
                        "AMIHUB_HES__TIMEOUT": "10",
                        "AMIHUB_HES__DISPATCH": "amqp",
                        "AMIHUB_HES__JOBS_QUEUE": f"amihub.hes.jobs.bench-{uuid.uuid4().hex[:8]}",
                        "AMIHUB_HES__JOB_TIMEOUT": "3600",
                    }
                )
                logs = [work / f"engine-{k}-{i}.log" for i in range(k)]
                procs = []
                for log in logs:
                    with log.open("wb") as out:
                        procs.append(
                            subprocess.Popen(
                                [
                                    *(sys.executable, "-m", "hub.cli", "engine"),
                                    *("--concurrency", str(c), "--prefetch", "2"),
                                ],
                                env={**env, "AMIHUB_LOG_LEVEL": "INFO"},
                                stdout=out,
                                stderr=subprocess.STDOUT,
                            )
                        )
                deadline = time.monotonic() + 60
                while not all("consuming" in log.read_text() for log in logs):
                    if time.monotonic() > deadline:
                        raise SystemExit("engines did not start")
                    time.sleep(0.1)
                saved = dict(os.environ)
                os.environ.update(env)
                try:
                    settings = load_settings()
                finally:
                    os.environ.clear()
                    os.environ.update(saved)
                try:
                    done = fleet_read(
                        settings,
                        start,
                        end,
                        job_meters=job_meters,
                        registers=("1.0.1.8.0.255",),
                        profile_channels=("1.0.1.8.0.255",),
                        events=False,  # as measured: profile and register only
                        store=open_store,
                    )
                finally:
                    for p in procs:
                        p.send_signal(signal.SIGTERM)
                    for p in procs:
                        p.wait(60)
                rows.append((k, done.seconds, done.outcomes, done.stats))
                from kombu.connection import Connection

                with Connection(amqp_url) as conn, conn.channel() as ch:
                    ch.queue_delete(settings.hes.jobs_queue)
    finally:
        sim.terminate()
        sim.wait(10)
    print(
        f"{n} meters, daily profile (96 intervals) + +A, HLS-GMAC, concurrency {c} per engine, "
        f"jobs of {job_meters} via RabbitMQ, store: PostgreSQL"
    )
    for k, seconds, outcomes, stats in rows:
        print(
            f"  {k} engine process(es): {seconds:7.1f} s  {n / seconds:6.0f} meters/s  "
            f"done {outcomes.get('done', 0)}, stored {stats.get('stored', 0)}"
        )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench.hes_read")
    parser.add_argument("--meters", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--no-store", action="store_true")
    parser.add_argument("--engines-amqp", type=int, default=0)
    parser.add_argument("--job-meters", type=int, default=250)
    args = parser.parse_args(argv)
    n, c = args.meters, args.concurrency
    if args.engines_amqp:
        amqp_engines(n, c, args.engines_amqp, args.job_meters)
        return

    from contextlib import ExitStack

    from bench.common import scratch_database

    hls_port, low_port = _free_port(), _free_port()
    sims = [_start_simulator(n, hls_port, "hls"), _start_simulator(n, low_port, "low")]
    figures: dict[str, float] = {}
    try:
        with ExitStack() as stack:
            urls = (
                ["-", "-", "-"]
                if args.no_store
                else [stack.enter_context(scratch_database("amihub_hes")) for _ in range(3)]
            )
            for url in urls:
                if url != "-":
                    prepare_store(url, n)
            (secured,) = _run_children(
                [["engine", str(hls_port), "hls", "0", str(n), str(c), urls[0]]]
            )
            (plain,) = _run_children(
                [["engine", str(low_port), "low", "0", str(n), str(c), urls[1]]]
            )
            (bare,) = _run_children([["bare", str(low_port), str(n), str(c)]])
            half = n // 2
            two = _run_children(
                [
                    ["engine", str(hls_port), "hls", "0", str(half), str(c), urls[2]],
                    ["engine", str(hls_port), "hls", str(half), str(n), str(c), urls[2]],
                ]
            )
        figures = {
            "secured": secured["seconds"],
            "plain": plain["seconds"],
            "bare": bare["seconds"],
            "two": max(t["seconds"] for t in two),
        }
        store = "counted, not stored" if args.no_store else "PostgreSQL"
        print(f"{n} meters, daily profile (96 intervals) + +A, concurrency {c}, store: {store}")
        print(
            f"  secured (HLS-GMAC, auth+enc), 1 engine : {figures['secured']:7.1f} s  "
            f"{n / figures['secured']:6.0f} meters/s  done {secured['done']}, "
            f"rows {secured['stored']}"
        )
        print(
            f"  plain (LLS), 1 engine                  : {figures['plain']:7.1f} s  "
            f"{n / figures['plain']:6.0f} meters/s  done {plain['done']}"
        )
        print(
            f"  bare gurux client loop (LLS, no store) : {figures['bare']:7.1f} s  "
            f"{n / figures['bare']:6.0f} meters/s  rows {bare['rows']}"
        )
        print(
            f"  secured, 2 engines                     : {figures['two']:7.1f} s  "
            f"{n / figures['two']:6.0f} meters/s  done {sum(t['done'] for t in two)}"
        )
        print(
            f"  ratio secured / bare gurux             : {figures['secured'] / figures['bare']:.2f}"
        )
        print(
            f"  ratio plain / bare gurux               : {figures['plain'] / figures['bare']:.2f}"
        )
    finally:
        for p in sims:
            p.terminate()
            p.wait(10)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "engine":
        child_engine(sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == "bare":
        child_bare(sys.argv[2:])
    else:
        main(sys.argv[1:])
