"""Issue 3: GetMeterReadings over SOAP from PostgreSQL vs a bare spyne echo service.

Same run, same machine, same WSGI server (cheroot, ``--threads`` workers, one
server process each unless said), same load generator: ``--clients`` concurrent
keep-alive HTTP/1.1 connections from an asyncio raw-socket client in this process
(zeep is not used on the load side: its per-call cost would measure the client).
Each request has its own MessageID, HTTP Basic auth, and asks one meter-day (96 x
15-minute values, TimeSchedule 00:00..24:00) of one of ``--meters`` meters from
PostgreSQL. The echo service is a plain spyne ``@rpc(Unicode, _returns=Unicode)``
on Soap11 -- the floor of any spyne service.

Printed per run: replies/s, p50/p99 latency, the server's CPU per reply (CPU
seconds of the server process(es) over the timed window / replies: steadier than
replies/s on a shared machine), the CPU of this database's PostgreSQL backends per
reply, and the load average. Then:

* one meter-year (35,040 values) in one GetMeterReadings reply over HTTP: time,
  size, and the server process's peak RSS (VmHWM) before and after -- the reply is
  written into a spool file and streamed, so the peak stays where the meter-days
  left it;
* where the time of one get goes inside ``Pipeline.process`` (cProfile over N calls,
  in this process, no HTTP), and the database round trips of one get.

Usage: ``python -m bench.soap_get [--seconds 8] [--clients 8] [--threads 8]``

The baseline needs spyne, which amihub does not depend on: it is in the ``bench`` extra
(``pip install -e '.[bench]'``; spyne 2.14 imports on Python 3.11 only, so on a 3.13
default run ``make bench PYTHON=python3.11 VENV=.venv-3.11``). Without it the bench
says so and measures amihub alone.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import cProfile
import json
import os
import pstats
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from bench.common import plain, scratch_database

START = datetime(2026, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
GMR = "http://iec.ch/TC57/2011/GetMeterReadingsMessage"
MSG = "http://iec.ch/TC57/2011/schema/message"
GET_ACTION = "http://iec.ch/TC57/2011/GetMeterReadings/GetMeterReadings"
USER, PASSWORD = "bench", "bench-secret"
YEAR_METER = "BY0000001"


def meters(n: int) -> list[str]:
    return [f"BM{i:07d}" for i in range(n)]


# -- server side (child processes) -----------------------------------------------------------


def _settings(url: str, port: int, threads: int, processes: int = 1) -> Any:
    from hub.security import UserSettings
    from hub.settings import SoapSettings, load_settings

    return load_settings(
        database_url=url,
        log_level="WARNING",
        users=[UserSettings(name=USER, password=PASSWORD)],  # type: ignore[arg-type]
        soap=SoapSettings(
            enabled=True,
            port=port,
            threads=threads,
            processes=processes,
            access_log=False,
            max_body_bytes=1 << 20,
        ),
    )


def prepare(url: str, n_meters: int, days: int) -> None:
    """Schema, meters and readings through the pipeline (setup, not measured)."""
    from adapters.memory import MemoryAdapter
    from hub.bootstrap import bootstrap
    from hub.samples import meter_readings_bytes
    from mdm.commands import CreateMeter
    from mdm.handlers import HandlerContext
    from mdm.model import EndDevice

    app = bootstrap(_settings(url, 0, 1), migrate=True)
    ctx = HandlerContext(actor="bench", now=datetime.now(UTC))
    with app.uow_factory() as uow:
        utility = uow.utilities.get(app.settings.default_utility)
        assert utility is not None
        assert utility.id is not None
        for mrid in [*meters(n_meters), YEAR_METER]:
            app.bus.handle(
                CreateMeter(utility.id, EndDevice(mrid=mrid, utility_code=utility.code)), uow, ctx
            )
        uow.commit()
    hub = MemoryAdapter(app.pipeline)
    for start in range(0, n_meters, 50):
        batch = meters(n_meters)[start : start + 50]
        outcome = hub.request(meter_readings_bytes(batch, START, 96 * days, registers=False))
        assert outcome.ok, outcome.errors
    year = meter_readings_bytes([YEAR_METER], START, 35_040, registers=False)
    assert hub.request(year).ok
    app.close()
    # fresh statistics, as autovacuum would have them on a running system (without them
    # the planner looks meters up through the wrong index)
    with psycopg.connect(plain(url), autocommit=True) as conn:
        conn.execute("ANALYZE")


def serve(url: str, port: int, threads: int, mode: str) -> None:
    echo = mode == "echo"
    import logging

    logging.basicConfig(level=logging.WARNING)
    if echo:
        from cheroot import wsgi
        from spyne import Application, ServiceBase, Unicode, rpc
        from spyne.protocol.soap import Soap11
        from spyne.server.wsgi import WsgiApplication

        class Echo(ServiceBase):  # type: ignore[misc]
            @rpc(Unicode, _returns=Unicode)  # type: ignore[misc]
            def echo(ctx: Any, text: str) -> str:  # noqa: N805 - spyne passes the context
                return text

        app = Application([Echo], tns="urn:bench", in_protocol=Soap11(), out_protocol=Soap11())
        server = wsgi.Server(("127.0.0.1", port), WsgiApplication(app), numthreads=threads)
        server.prepare()
        thread = threading.Thread(target=server.serve, daemon=True)
        thread.start()
        _wait_for_sigterm()
        server.stop()
        return
    from hub.bootstrap import bootstrap, soap_service

    app_ = bootstrap(_settings(url, port, threads, 2 if mode == "pipeline2" else 1))
    service = soap_service(app_)
    service.start()
    if mode == "pipeline2":
        time.sleep(4)  # the second process bootstraps and binds the port
    _wait_for_sigterm()
    service.stop()


def _wait_for_sigterm() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("ready", flush=True)
    stop.wait()


def peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


class Child:
    def __init__(self, url: str, port: int, threads: int, mode: str) -> None:
        args = [
            sys.executable,
            "-m",
            "bench.soap_get",
            "_serve",
            url,
            str(port),
            str(threads),
            mode,
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            raise SystemExit(f"server did not start: {line!r}")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


# -- load generator -----------------------------------------------------------------------


def get_request(meter: str, day: int, port: int) -> bytes:
    start = START + day * DAY
    body = (
        f'<soapenv:Envelope xmlns:soapenv="{SOAP_ENV}"><soapenv:Body>'
        f'<g:GetMeterReadings xmlns:g="{GMR}" xmlns:m="{MSG}" '
        'xmlns:p="http://iec.ch/TC57/2011/GetMeterReadings#">'
        "<g:Header><m:Verb>get</m:Verb><m:Noun>MeterReadings</m:Noun>"
        f"<m:MessageID>{uuid.uuid4()}</m:MessageID></g:Header>"
        f"<g:Request><p:GetMeterReadings><p:EndDevice><p:mRID>{meter}</p:mRID></p:EndDevice>"
        f"<p:TimeSchedule><p:scheduleInterval><p:end>{(start + DAY).isoformat()}</p:end>"
        f"<p:start>{start.isoformat()}</p:start></p:scheduleInterval></p:TimeSchedule>"
        "</p:GetMeterReadings></g:Request></g:GetMeterReadings>"
        "</soapenv:Body></soapenv:Envelope>"
    ).encode()
    return _http("/ws/GetMeterReadings", GET_ACTION, body, port)


def echo_request(port: int) -> bytes:
    body = (
        f'<soapenv:Envelope xmlns:soapenv="{SOAP_ENV}" xmlns:b="urn:bench"><soapenv:Body>'
        f"<b:echo><b:text>{uuid.uuid4()}</b:text></b:echo></soapenv:Body></soapenv:Envelope>"
    ).encode()
    return _http("/", "echo", body, port)


def _http(path: str, action: str, body: bytes, port: int) -> bytes:
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f'Content-Type: text/xml; charset=utf-8\r\nSOAPAction: "{action}"\r\n'
        f"Authorization: Basic {auth}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _one_connection(
    port: int, make: Any, until: float, latencies: list[float], errors: list[str], expect: bytes
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < until:
            request = make()
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if not head.startswith(b"HTTP/1.1 200") or expect not in body:
                errors.append(head.split(b"\r\n", 1)[0].decode() + " " + body[:300].decode())
    finally:
        writer.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, from /proc (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the server and any worker processes it started)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    tree, frontier = [pid], [pid]
    while frontier:
        frontier = [child for child, parent in parents.items() if parent in frontier]
        tree += frontier
    return tree


def database_backends(url: str) -> list[int]:
    """PostgreSQL backend processes of this database on this machine (their CPU is the
    database's share of a get; other databases' backends are not counted)."""
    name = url.rsplit("/", 1)[1]
    out = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text.startswith("postgres:") and f" {name} " in text:
            out.append(int(cmdline.parent.name))
    return out


def load(
    port: int,
    make: Any,
    clients: int,
    seconds: float,
    expect: bytes,
    server_pid: int | None = None,
    url: str | None = None,
) -> dict[str, float]:
    latencies: list[float] = []
    errors: list[str] = []

    async def run(duration: float) -> None:
        until = time.perf_counter() + duration
        await asyncio.gather(
            *(_one_connection(port, make, until, latencies, errors, expect) for _ in range(clients))
        )

    asyncio.run(run(1.0))  # warm-up: caches, connections, the first query plans
    latencies.clear()
    errors.clear()
    server = process_tree(server_pid) if server_pid else []
    backends = database_backends(url) if url else []
    cpu_before = {p: cpu_seconds(p) for p in server + backends}
    started = time.perf_counter()
    asyncio.run(run(seconds))
    elapsed = time.perf_counter() - started
    cpu_after = {p: cpu_seconds(p) for p in server + backends}
    if errors:
        print(f"  {len(errors)} errors, first: {errors[0]}")
    latencies.sort()
    n = len(latencies)
    per_reply = 1000 / n if n else 0.0

    def used(pids: list[int]) -> float:
        return sum(max(0.0, cpu_after[p] - cpu_before[p]) for p in pids)

    return {
        "replies": n,
        "per_s": n / elapsed,
        "p50_ms": latencies[n // 2] * 1000 if n else 0.0,
        "p99_ms": latencies[int(n * 0.99)] * 1000 if n else 0.0,
        "errors": len(errors),
        "server_cpu_ms": used(server) * per_reply,
        "db_cpu_ms": used(backends) * per_reply,
        "load_average": os.getloadavg()[0],
    }


# -- meter-year and profile -----------------------------------------------------------------


def year_over_http(port: int, pid: int) -> dict[str, float]:
    import http.client

    before = peak_rss_kb(pid)
    body = get_request(YEAR_METER, 0, port).split(b"\r\n\r\n", 1)[1]
    body = body.replace(
        (START + DAY).isoformat().encode(), (START + 365 * DAY).isoformat().encode()
    )
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    started = time.perf_counter()
    conn.request(
        "POST",
        "/ws/GetMeterReadings",
        body,
        {"Content-Type": "text/xml", "SOAPAction": GET_ACTION, "Authorization": f"Basic {auth}"},
    )
    response = conn.getresponse()
    size = values = 0
    tail = b""
    while chunk := response.read(1 << 16):  # the client holds no more than a chunk either
        size += len(chunk)
        window = tail + chunk  # a tag may straddle two chunks
        values += window.count(b"<IntervalReadings>") - tail.count(b"<IntervalReadings>")
        tail = window[-32:]
    elapsed = time.perf_counter() - started
    assert response.status == 200, response.status
    return {
        "seconds": elapsed,
        "bytes": size,
        "values": values,
        "server_peak_rss_before_mb": before / 1024,
        "server_peak_rss_after_mb": peak_rss_kb(pid) / 1024,
    }


def _inner(meter: str, day: int) -> bytes:
    body = get_request(meter, day, 0).split(b"\r\n\r\n", 1)[1]
    return body.split(b"<soapenv:Body>", 1)[1].rsplit(b"</soapenv:Body>", 1)[0]


def profile_pipeline(url: str, n_meters: int, calls: int) -> list[tuple[str, float]]:
    """Milliseconds per get in the main parts of Pipeline.process (cProfile, cumulative)."""
    from adapters.memory import MemoryAdapter
    from hub.bootstrap import bootstrap

    app = bootstrap(_settings(url, 0, 1))
    hub = MemoryAdapter(app.pipeline)
    names = meters(n_meters)
    bodies = [_inner(names[i % len(names)], 1) for i in range(calls)]
    for i in range(20):
        hub.request(_inner(names[i], 1))  # warm-up
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    for b in bodies:
        hub.request(b, source="bench")
    profiler.disable()
    wall = (time.perf_counter() - started) / calls * 1000
    stats = pstats.Stats(profiler)
    wanted = {
        ("pipeline.py", "process"): "Pipeline.process (total, profiled)",
        ("pipeline.py", "_frame_of_read"): "  hardened parse + XSD validation + envelope",
        ("pipeline.py", "_answer_read"): "  the read path (one transaction)",
        ("uow.py", "__enter__"): "    connection from the pool (pre-ping) + BEGIN",
        ("get_meter_readings.py", "read_query"): "    the request as a ReadQuery",
        ("handlers.py", "query_meter_readings"): "    meter lookup + readings statement",
        ("writer.py", "write_readings"): "    rows fetched + MeterReadings written",
        ("envelope.py", "response_writer"): "    ResponseMessage Header/Reply written",
        ("answered.py", "record_answered"): "    message log: row + lifecycle, one statement",
        ("uow.py", "commit"): "    COMMIT",
    }
    rows: list[tuple[str, float]] = [("Pipeline.process (wall, unprofiled would be less)", wall)]
    found: dict[str, float] = {}
    for (filename, _, func), (_, _, _, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        key = (os.path.basename(filename), func)
        if key in wanted:
            found[wanted[key]] = found.get(wanted[key], 0.0) + cumulative / calls * 1000
    rows += [(label, found[label]) for label in wanted.values() if label in found]
    app.close()
    return rows


def statements_per_get(url: str, n_meters: int, calls: int) -> tuple[float, list[str]]:
    """The database exchanges of one get, counted at the driver (psycopg): statements
    (by their first words, SQLAlchemy's and raw ones alike), commits, and round trips."""
    from collections import Counter

    from adapters.memory import MemoryAdapter
    from hub.bootstrap import bootstrap

    app = bootstrap(_settings(url, 0, 1))
    hub = MemoryAdapter(app.pipeline)
    names = meters(n_meters)
    for i in range(20):
        hub.request(_inner(names[i], 1))
    counts: Counter[str] = Counter()
    original = (
        psycopg.Cursor.execute,
        psycopg.Cursor.stream,
        psycopg.Connection.commit,
        psycopg.Connection.wait,
    )

    def label(query: Any) -> str:
        text = query if isinstance(query, str) else str(getattr(query, "text", query))
        words = text.split()
        if words[:1] == ["WITH"]:  # the CTE: name what it writes
            words = text.split("INSERT", 1)[1].split()[:2]
            words.insert(0, "WITH ... INSERT")
        return " ".join(words[:3])[:48]

    def execute(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        counts[label(query)] += 1
        return original[0](self, query, *args, **kwargs)

    def stream(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        counts[label(query) + " (streamed)"] += 1
        return original[1](self, query, *args, **kwargs)

    def commit(self: Any) -> Any:
        counts["COMMIT"] += 1
        return original[2](self)

    def wait(self: Any, *args: Any, **kwargs: Any) -> Any:
        counts["(round trips and waits at the driver)"] += 1
        return original[3](self, *args, **kwargs)

    psycopg.Cursor.execute = execute  # type: ignore[method-assign,assignment]
    psycopg.Cursor.stream = stream  # type: ignore[method-assign,assignment]
    psycopg.Connection.commit = commit  # type: ignore[method-assign]
    psycopg.Connection.wait = wait  # type: ignore[method-assign,assignment]
    bodies = [_inner(names[i % len(names)], 1) for i in range(calls)]
    started = time.perf_counter()
    try:
        for body in bodies:
            hub.request(body, source="bench")
    finally:
        (
            psycopg.Cursor.execute,
            psycopg.Cursor.stream,
            psycopg.Connection.commit,
            psycopg.Connection.wait,
        ) = original  # type: ignore[method-assign,assignment]
    wall = (time.perf_counter() - started) / calls * 1000
    lines = [f"{n / calls:4.1f} x  {key}" for key, n in counts.most_common()]
    app.close()
    return wall, lines


# -- main -----------------------------------------------------------------------------------


MODES = (
    ("spyne echo", "echo"),
    ("amihub GetMeterReadings", "pipeline"),
    ("same, [soap] processes = 2", "pipeline2"),
)


#: how to get the baseline: spyne is not an amihub dependency (pyproject ``bench`` extra)
NO_SPYNE = (
    "the spyne echo baseline is skipped: spyne is not installed. It is in the optional "
    "'bench' extra: `pip install -e '.[bench]'` (or `make bench`), on Python 3.11 only "
    "(spyne 2.14 does not import on 3.12+): "
    "`make bench PYTHON=python3.11 VENV=.venv-3.11`"
)


def have_spyne() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("spyne") is not None
    except ImportError:
        return False


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main(argv: list[str]) -> None:
    if argv and argv[0] == "_serve":
        serve(argv[1], int(argv[2]), int(argv[3]), argv[4])
        return
    parser = argparse.ArgumentParser(prog="python -m bench.soap_get")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--meters", type=int, default=200)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the modes")
    parser.add_argument("--profile-calls", type=int, default=300)
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    modes = MODES if have_spyne() else tuple(m for m in MODES if m[1] != "echo")
    if len(modes) < len(MODES):
        print(NO_SPYNE)
    with scratch_database("amihub_bench_soap") as url:
        t = time.perf_counter()
        prepare(url, args.meters, args.days)
        print(
            f"prepared {args.meters} meters x {args.days} days + 1 meter-year "
            f"in {time.perf_counter() - t:.1f}s (PostgreSQL)"
        )
        names = meters(args.meters)
        counter = iter(range(1 << 62))
        best: dict[str, dict[str, float]] = {}
        for _ in range(args.rounds):  # alternate, so a noisy neighbour hurts all alike
            for label, mode in modes:
                echo = mode == "echo"
                port = free_port()
                child = Child(url, port, args.threads, mode)
                try:
                    if echo:
                        make = lambda p=port: echo_request(p)  # noqa: E731
                        expect = b"echoResponse"
                    else:
                        make = lambda p=port: get_request(  # noqa: E731
                            names[next(counter) % len(names)], 1, p
                        )
                        expect = b"<value>"
                    figures = load(
                        port,
                        make,
                        args.clients,
                        args.seconds,
                        expect,
                        server_pid=child.proc.pid,
                        url=None if echo else url,
                    )
                    if label not in best or figures["per_s"] > best[label]["per_s"]:
                        best[label] = figures
                    print(
                        f"  {label:<28} {figures['per_s']:6.0f} replies/s  "
                        f"p50 {figures['p50_ms']:5.1f} ms  p99 {figures['p99_ms']:6.1f} ms  "
                        f"server CPU {figures['server_cpu_ms']:.2f} ms/reply  "
                        + ("" if echo else f"PostgreSQL CPU {figures['db_cpu_ms']:.2f} ms/reply  ")
                        + f"load {figures['load_average']:.1f}  errors {figures['errors']:.0f}"
                    )
                    if mode == "pipeline" and "year" not in results:
                        first = year_over_http(port, child.proc.pid)
                        second = year_over_http(port, child.proc.pid)
                        results["year"] = first
                        results["year_again"] = second
                finally:
                    child.stop()
        echo = best.get("spyne echo")
        get = best["amihub GetMeterReadings"]
        two = best["same, [soap] processes = 2"]
        print()
        print(
            f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} now; "
            f"cheroot {args.threads} threads, {args.clients} keep-alive clients, best of "
            f"{args.rounds} rounds of {args.seconds:.0f}s (load average beside each figure)"
        )
        if echo is not None:
            print(
                f"bare spyne echo (no database):            {echo['per_s']:8.0f} replies/s  "
                f"p50 {echo['p50_ms']:.1f} ms  p99 {echo['p99_ms']:.1f} ms  server CPU "
                f"{echo['server_cpu_ms']:.2f} ms/reply  (load {echo['load_average']:.1f})"
            )
        else:
            print(NO_SPYNE)
        print(
            f"GetMeterReadings, 96 values, PostgreSQL:  {get['per_s']:8.0f} replies/s  "
            f"p50 {get['p50_ms']:.1f} ms  p99 {get['p99_ms']:.1f} ms  "
            f"server CPU {get['server_cpu_ms']:.2f} ms/reply  "
            f"PostgreSQL CPU {get['db_cpu_ms']:.2f} ms/reply  (load {get['load_average']:.1f}; "
            "target >= 500 replies/s)"
        )
        if echo is not None:
            print(f"ratio GetMeterReadings / echo:            {get['per_s'] / echo['per_s']:8.2f}")
        print(
            f"same with [soap] processes = 2:           {two['per_s']:8.0f} replies/s  "
            f"p50 {two['p50_ms']:.1f} ms  p99 {two['p99_ms']:.1f} ms  "
            f"server CPU {two['server_cpu_ms']:.2f} ms/reply  (load {two['load_average']:.1f})"
        )
        for key, what in (("year", "meter-year over SOAP"), ("year_again", "  and again")):
            y = results[key]
            print(
                f"{what}: {y['values']:.0f} values, {y['bytes'] / 1e6:.1f} MB in "
                f"{y['seconds']:.2f}s; server peak RSS {y['server_peak_rss_before_mb']:.0f} -> "
                f"{y['server_peak_rss_after_mb']:.0f} MB"
            )
        print()
        print(
            f"where one get goes in Pipeline.process ({args.profile_calls} calls, "
            "cProfile, ms per call, sequential, no HTTP):"
        )
        for label, ms in profile_pipeline(url, args.meters, args.profile_calls):
            print(f"  {label:<62} {ms:7.2f}")
        wall, lines = statements_per_get(url, args.meters, args.profile_calls)
        print(f"database exchanges per get (at the driver; {wall:.2f} ms per get, sequential):")
        for line in lines:
            print(f"  {line}")
        results.update(echo=echo, get=get, two_processes=two)
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1:])
