"""Issue 3: GetMeterReadings over SOAP from PostgreSQL vs a bare spyne echo service.

Same run, same machine, same WSGI server (cheroot, ``--threads`` workers, one
server process each), same load generator: ``--clients`` concurrent keep-alive
HTTP/1.1 connections from an asyncio raw-socket client in this process (zeep is
not used on the load side: its per-call cost would measure the client). Each
request has its own MessageID (no duplicate shortcut), HTTP Basic auth, and asks
one meter-day (96 x 15-minute values, TimeSchedule 00:00..24:00) of one of
``--meters`` meters from PostgreSQL. The echo service is a plain spyne
``@rpc(Unicode, _returns=Unicode)`` on Soap11 -- the floor of any spyne service.

Then:

* one meter-year (35,040 values) in one GetMeterReadings reply: time, size, and
  the server process's peak RSS before and after (VmHWM);
* the same meter-year through the route's incremental writer
  (``GetMeterReadingsRoute.write_reply``), peak traced memory -- the bounded path a
  streaming pipeline would use;
* where the time of one get goes inside ``Pipeline.process`` (cProfile over N calls,
  in this process, no HTTP).

Usage: ``python -m bench.soap_get [--seconds 8] [--clients 8] [--threads 8]``
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import cProfile
import io
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

from bench.common import scratch_database

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


def lean_pipeline(app: Any, log_messages: bool = True) -> Any:
    """A PROTOTYPE of the change proposed for hub/pipeline.py (not product code): a get
    is read-only, so its bookkeeping runs in ONE transaction (message log row, lifecycle,
    stored reply and the query together) committed with ``synchronous_commit = off``
    (losing the log line of a get in a crash is harmless), instead of two transactions
    each waiting for a WAL flush. Everything else (parse, XSD, authorisation, route,
    reply) is the pipeline's own code."""
    from sqlalchemy import text

    from hub.lifecycle import LifecycleRecorder
    from hub.lifecycle import MessageLifecycle as S
    from hub.messages import Outcome
    from hub.pipeline import Pipeline
    from hub.routing import RouteContext
    from mdm.handlers import HandlerContext

    class LeanGetPipeline(Pipeline):
        log_messages = True

        def process(self, msg: Any) -> Any:
            body = msg.body
            if body is None or b"<m:Verb>get</m:Verb>" not in body[:2000]:
                return super().process(msg)
            frame = self._parse_tree(body)
            header = frame.header
            self._authorise(msg, header)
            route = self.routes.get(header.verb, header.noun)
            if not self.log_messages:
                return self._unlogged(msg, frame, route)
            with self.uow_factory() as uow:
                uow.connection.execute(text("SET LOCAL synchronous_commit TO OFF"))  # type: ignore[attr-defined]
                log_id = uow.messages.start(
                    msg.source, msg.endpoint, msg.content_hash(), msg.size, msg.received_at
                )
                steps = LifecycleRecorder(log_id)
                utility = uow.utilities.get(self._utility(msg))
                assert utility is not None
                assert utility.id is not None
                steps.advance(uow.messages, S.VALIDATED)
                steps.advance(uow.messages, S.DISPATCHED, "get")
                ctx = RouteContext(
                    utility.id, utility.code, HandlerContext(msg.source, self.clock()), self.bus
                )
                result = route.handle(frame, ctx, uow)
                reply = self._render(
                    header, frame.style, result.result, result.errors, result.payload
                )
                uow.messages.identify(log_id, None, header.verb, header.noun, header.correlation_id)
                steps.finish(uow.messages, S.REPLIED, result.result, reply)
                uow.commit()
            return Outcome(
                result.result,
                reply,
                result.errors,
                log_id,
                verb=header.verb,
                noun=header.noun,
                message_id=header.message_id,
                correlation_id=header.message_id,
            )

        def _unlogged(self, msg: Any, frame: Any, route: Any) -> Any:
            """Upper bound: the same get without any message-log write (read-only tx)."""
            header = frame.header
            with self.uow_factory() as uow:
                utility = uow.utilities.get(self._utility(msg))
                assert utility is not None
                assert utility.id is not None
                ctx = RouteContext(
                    utility.id, utility.code, HandlerContext(msg.source, self.clock()), self.bus
                )
                result = route.handle(frame, ctx, uow)
                reply = self._render(
                    header, frame.style, result.result, result.errors, result.payload
                )
            return Outcome(
                result.result,
                reply,
                result.errors,
                None,
                verb=header.verb,
                noun=header.noun,
                message_id=header.message_id,
                correlation_id=header.message_id,
            )

    pipeline = LeanGetPipeline(
        app.uow_factory, app.bus, app.routes, app.settings.limits, app.settings.default_utility
    )
    pipeline.log_messages = log_messages
    return pipeline


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
    from adapters.soap.service import SoapService
    from hub.bootstrap import bootstrap

    app_ = bootstrap(_settings(url, port, threads, 2 if mode == "pipeline2" else 1))
    if mode in ("lean", "nolog"):
        app_.pipeline = lean_pipeline(app_, log_messages=mode == "lean")
    service = SoapService(app_)
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


def load(port: int, make: Any, clients: int, seconds: float, expect: bytes) -> dict[str, float]:
    latencies: list[float] = []
    errors: list[str] = []

    async def run(duration: float) -> None:
        until = time.perf_counter() + duration
        await asyncio.gather(
            *(_one_connection(port, make, until, latencies, errors, expect) for _ in range(clients))
        )

    asyncio.run(run(1.0))  # warm-up: caches, connections, the first query plans
    latencies.clear()
    started = time.perf_counter()
    asyncio.run(run(seconds))
    elapsed = time.perf_counter() - started
    if errors:
        print(f"  {len(errors)} errors, first: {errors[0]}")
    latencies.sort()
    n = len(latencies)
    return {
        "replies": n,
        "per_s": n / elapsed,
        "p50_ms": latencies[n // 2] * 1000 if n else 0.0,
        "p99_ms": latencies[int(n * 0.99)] * 1000 if n else 0.0,
        "errors": len(errors),
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
    data = response.read()
    elapsed = time.perf_counter() - started
    assert response.status == 200, data[:500]
    return {
        "seconds": elapsed,
        "bytes": len(data),
        "values": data.count(b"<IntervalReadings>"),
        "server_peak_rss_before_mb": before / 1024,
        "server_peak_rss_after_mb": peak_rss_kb(pid) / 1024,
    }


def _frame_for(body: bytes) -> Any:
    from lxml import etree

    from cim_schemas.envelope import parse_message
    from hub.routing import MessageFrame

    parsed = parse_message(etree.fromstring(body))
    assert parsed.header is not None
    return MessageFrame(parsed.header, parsed.style, parsed.root_name, request=parsed.request)


def year_streamed(url: str) -> dict[str, float]:
    """The route's incremental writer on the meter-year: traced peak of Python memory."""
    import tracemalloc

    from hub.bootstrap import bootstrap
    from hub.nouns.get_meter_readings import GetMeterReadingsRoute
    from hub.routing import RouteContext
    from mdm.handlers import HandlerContext

    app = bootstrap(_settings(url, 0, 1))
    body = get_request(YEAR_METER, 0, 0).split(b"\r\n\r\n", 1)[1]
    inner = body.split(b"<soapenv:Body>", 1)[1].rsplit(b"</soapenv:Body>", 1)[0]
    inner = inner.replace(
        (START + DAY).isoformat().encode(), (START + 365 * DAY).isoformat().encode()
    )
    frame = _frame_for(inner)

    class Sink(io.RawIOBase):
        size = 0

        def writable(self) -> bool:
            return True

        def write(self, b: Any) -> int:
            self.size += len(b)
            return len(b)

    sink = Sink()
    with app.uow_factory() as uow:
        utility = uow.utilities.get(app.settings.default_utility)
        assert utility is not None
        assert utility.id is not None
        ctx = RouteContext(
            utility.id, utility.code, HandlerContext("bench", datetime.now(UTC)), app.bus
        )
        tracemalloc.start()
        started = time.perf_counter()
        result = GetMeterReadingsRoute().write_reply(sink, frame, ctx, uow)  # type: ignore[arg-type]
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    app.close()
    return {
        "seconds": elapsed,
        "bytes": sink.size,
        "values": result.counts["readings"],
        "traced_peak_mb": peak / 1024 / 1024,
    }


def profile_pipeline(url: str, n_meters: int, calls: int) -> list[tuple[str, float]]:
    """Milliseconds per get in the main parts of Pipeline.process (cProfile, cumulative)."""
    from adapters.memory import MemoryAdapter
    from hub.bootstrap import bootstrap

    app = bootstrap(_settings(url, 0, 1))
    hub = MemoryAdapter(app.pipeline)
    names = meters(n_meters)

    def inner(i: int) -> bytes:
        body = get_request(names[i % len(names)], 0, 0).split(b"\r\n\r\n", 1)[1]
        return body.split(b"<soapenv:Body>", 1)[1].rsplit(b"</soapenv:Body>", 1)[0]

    bodies = [inner(i) for i in range(calls)]
    for _ in range(20):
        hub.request(inner(0))  # warm-up
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
        ("pipeline.py", "_start"): "  _start: message log row + commit (tx 1)",
        ("pipeline.py", "_parse_tree"): "  _parse_tree: hardened parse + XSD validation + envelope",
        ("pipeline.py", "_dispatch"): "  _dispatch (tx 2)",
        ("messages.py", "find"): "    idempotency lookup (source, MessageID)",
        ("lifecycle.py", "advance"): "    lifecycle steps VALIDATED, DISPATCHED",
        ("get_meter_readings.py", "handle"): "    route: query + build MeterReadings",
        ("get_meter_readings.py", "build_meter_readings"): "      build MeterReadings (lxml)",
        ("pipeline.py", "_render"): "    render the ResponseMessage (tostring)",
        ("messages.py", "identify"): "    message log: identify",
        ("lifecycle.py", "finish"): "    lifecycle REPLIED + stored reply",
        ("uow.py", "commit"): "  commits (both transactions)",
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
    """Every SQL statement and commit one get costs (SQLAlchemy events), and wall ms."""
    from collections import defaultdict

    import sqlalchemy
    from sqlalchemy import event

    from adapters.memory import MemoryAdapter
    from hub.bootstrap import bootstrap

    app = bootstrap(_settings(url, 0, 1))
    hub = MemoryAdapter(app.pipeline)
    names = meters(n_meters)

    def inner(i: int) -> bytes:
        body = get_request(names[i % len(names)], 1, 0).split(b"\r\n\r\n", 1)[1]
        return body.split(b"<soapenv:Body>", 1)[1].rsplit(b"</soapenv:Body>", 1)[0]

    for i in range(20):
        hub.request(inner(i))
    stats: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])

    def before(
        conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: Any
    ) -> None:
        context._bench_t = time.perf_counter()

    def after(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: Any) -> None:
        key = " ".join(statement.split()[:3])[:48]
        entry = stats[key]
        entry[0] += 1
        entry[1] += time.perf_counter() - context._bench_t

    event.listen(app.engine, "before_cursor_execute", before)
    event.listen(app.engine, "after_cursor_execute", after)
    original_commit = sqlalchemy.engine.Connection.commit

    def commit(self: Any) -> None:
        started = time.perf_counter()
        original_commit(self)
        entry = stats["COMMIT"]
        entry[0] += 1
        entry[1] += time.perf_counter() - started

    sqlalchemy.engine.Connection.commit = commit  # type: ignore[method-assign]
    bodies = [inner(i) for i in range(calls)]
    started = time.perf_counter()
    try:
        for body in bodies:
            hub.request(body, source="bench")
    finally:
        sqlalchemy.engine.Connection.commit = original_commit  # type: ignore[method-assign]
    wall = (time.perf_counter() - started) / calls * 1000
    lines = [
        f"{n / calls:4.1f} x {t / calls * 1000:6.2f} ms  {key}"
        for key, (n, t) in sorted(stats.items(), key=lambda kv: -kv[1][1])
    ]
    total_n = sum(n for n, _ in stats.values()) / calls
    total_t = sum(t for _, t in stats.values()) / calls * 1000
    lines.append(f"{total_n:4.1f} x {total_t:6.2f} ms  all statements and commits")
    app.close()
    return wall, lines


# -- main -----------------------------------------------------------------------------------


MODES = (
    ("spyne echo", "echo"),
    ("amihub GetMeterReadings", "pipeline"),
    ("same, proposed 1-tx get path", "lean"),
    ("same, no message log (bound)", "nolog"),
    ("as shipped, 2 processes", "pipeline2"),
)


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
    parser.add_argument("--rounds", type=int, default=2, help="echo/get alternations")
    parser.add_argument("--profile-calls", type=int, default=300)
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
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
        for _ in range(args.rounds):  # alternate, so a noisy neighbour hurts both alike
            for label, mode in MODES:
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
                    figures = load(port, make, args.clients, args.seconds, expect)
                    if label not in best or figures["per_s"] > best[label]["per_s"]:
                        best[label] = figures
                    print(
                        f"  {label:<26} {figures['per_s']:8.0f} replies/s  "
                        f"p50 {figures['p50_ms']:.1f} ms  p99 {figures['p99_ms']:.1f} ms  "
                        f"errors {figures['errors']:.0f}"
                    )
                    if mode == "pipeline" and "year" not in results:
                        results["year"] = year_over_http(port, child.proc.pid)
                finally:
                    child.stop()
        echo_rate = best["spyne echo"]["per_s"]
        get_rate = best["amihub GetMeterReadings"]["per_s"]
        print()
        print(
            f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
            f"cheroot {args.threads} threads, {args.clients} keep-alive clients, best of "
            f"{args.rounds} rounds of {args.seconds:.0f}s"
        )
        print(f"bare spyne echo (no database):            {echo_rate:8.0f} replies/s")
        print(
            f"GetMeterReadings, 96 values, PostgreSQL:  {get_rate:8.0f} replies/s  (target >= 500)"
        )
        print(f"ratio GetMeterReadings / echo:            {get_rate / echo_rate:8.2f}")
        lean_rate = best["same, proposed 1-tx get path"]["per_s"]
        print(
            f"with the proposed one-transaction get:    {lean_rate:8.0f} replies/s  "
            f"(ratio {lean_rate / echo_rate:.2f}; a prototype in this file, see lean_pipeline)"
        )
        y = results["year"]
        print(
            f"meter-year over SOAP: {y['values']:.0f} values, {y['bytes'] / 1e6:.1f} MB in "
            f"{y['seconds']:.2f}s; server peak RSS {y['server_peak_rss_before_mb']:.0f} -> "
            f"{y['server_peak_rss_after_mb']:.0f} MB"
        )
        s = year_streamed(url)
        print(
            f"meter-year through write_reply (streamed): {s['values']:.0f} values, "
            f"{s['bytes'] / 1e6:.1f} MB in {s['seconds']:.2f}s, traced peak "
            f"{s['traced_peak_mb']:.1f} MB"
        )
        print()
        print(
            f"where one get goes in Pipeline.process ({args.profile_calls} calls, "
            "cProfile, ms per call):"
        )
        for label, ms in profile_pipeline(url, args.meters, args.profile_calls):
            print(f"  {label:<62} {ms:7.2f}")
        wall, lines = statements_per_get(url, args.meters, args.profile_calls)
        print(f"SQL per get (statements x ms, sequential, not profiled; {wall:.2f} ms per get):")
        for line in lines:
            print(f"  {line}")
        results.update(
            echo=best["spyne echo"],
            get=best["amihub GetMeterReadings"],
            lean=best["same, proposed 1-tx get path"],
            nolog=best["same, no message log (bound)"],
            two_processes=best["as shipped, 2 processes"],
            stream=s,
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1:])
