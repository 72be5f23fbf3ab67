"""Issue 14: the JSON API's readings of one meter-day from PostgreSQL, beside SOAP
GetMeterReadings of the same data in the same run; and a meter-month chart page.

Same run, same machine, same WSGI server (cheroot, ``--threads`` workers, one server
process each), same load generator as bench/soap_get.py (``--clients`` keep-alive
HTTP/1.1 connections from an asyncio raw-socket client, HTTP Basic auth): the API's
``GET /api/meters/{mrid}/readings?start=..&end=..`` and SOAP GetMeterReadings each ask
one meter-day (96 x 15-minute values) of one of ``--meters`` meters. Printed: replies/s,
p50/p99, the server's and PostgreSQL's CPU per reply, and the ratio API / SOAP.

Then the web UI's readings page of one meter-month (2,976 values: the SVG chart and the
table) fetched ``--page-calls`` times one after the other: median and worst time.

Usage: ``python -m bench web-readings [--seconds 8] [--clients 8] [--threads 8]
[--rounds 2]`` (``--help``: every option).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

from bench.common import scratch_database
from bench.soap_get import (
    DAY,
    PASSWORD,
    START,
    USER,
    _settings,
    cpu_seconds,
    free_port,
    get_request,
    load,
    meters,
    prepare,
)


def web_settings(url: str, port: int, threads: int) -> Any:
    from hub.web_settings import WebSettings

    settings = _settings(url, 0, threads)
    return settings.model_copy(
        update={
            "soap": settings.soap.model_copy(update={"enabled": False}),
            "web": WebSettings(enabled=True, port=port, threads=threads, access_log=False),
        }
    )


def serve(url: str, port: int, threads: int, mode: str) -> None:
    import logging

    logging.basicConfig(level=logging.WARNING)
    from hub.bootstrap import bootstrap

    service: Any
    partner = None
    if mode == "web2":  # a second server process on the same port (SO_REUSEPORT)
        partner = Child(url, port, threads, "web")
        mode = "web"
    if mode == "web":
        from adapters.web.service import WebService

        app = bootstrap(web_settings(url, port, threads))
        service = WebService(app)
    else:
        from adapters.soap.service import SoapService

        app = bootstrap(_settings(url, port, threads))
        service = SoapService(app)
    service.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("ready", flush=True)
    stop.wait()
    service.stop()
    app.close()
    if partner is not None:
        partner.stop()


class Child:
    def __init__(self, url: str, port: int, threads: int, mode: str) -> None:
        args = [sys.executable, "-m", "bench.web_readings", "_serve", url, str(port)]
        self.proc = subprocess.Popen([*args, str(threads), mode], stdout=subprocess.PIPE, text=True)
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


AUTH = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


def api_request(meter: str, day: int, port: int) -> bytes:
    start = START + day * DAY
    query = f"start={start.isoformat()}&end={(start + DAY).isoformat()}".replace("+", "%2B")
    return (
        f"GET /api/meters/{meter}/readings?{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Basic {AUTH}\r\n\r\n"
    ).encode()


def page_times(port: int, meter: str, calls: int, pid: int) -> tuple[list[float], float]:
    """Seconds per fetch of the meter-month readings page (sequential, keep-alive), and
    the server's CPU seconds per fetch."""
    last = (START + 31 * DAY - DAY).date().isoformat()
    path = f"/ui/meters/{meter}/readings?end={last}&days=31"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Authorization": f"Basic {AUTH}"}
    times = []
    cpu = 0.0
    for n in range(calls + 2):
        before = cpu_seconds(pid)
        started = time.perf_counter()
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        body = response.read()
        elapsed = time.perf_counter() - started
        assert response.status == 200, (response.status, body[:300])
        assert body.count(b"<tr class=") == 31 * 96, body.count(b"<tr class=")
        assert b"<polyline" in body
        if n >= 2:  # two warm-up fetches (templates compiled, plans cached)
            times.append(elapsed)
            cpu += cpu_seconds(pid) - before
    conn.close()
    return times, cpu / calls


def main(argv: list[str]) -> None:
    if argv and argv[0] == "_serve":
        serve(argv[1], int(argv[2]), int(argv[3]), argv[4])
        return
    parser = argparse.ArgumentParser(prog="python -m bench web-readings")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--meters", type=int, default=100)
    parser.add_argument("--days", type=int, default=31)
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the two")
    parser.add_argument("--page-calls", type=int, default=20)
    args = parser.parse_args(argv)
    with scratch_database("amihub_bench_web") as url:
        t = time.perf_counter()
        prepare(url, args.meters, args.days)
        print(
            f"prepared {args.meters} meters x {args.days} days in "
            f"{time.perf_counter() - t:.1f}s (PostgreSQL)"
        )
        names = meters(args.meters)
        counter = iter(range(1 << 62))
        best: dict[str, dict[str, float]] = {}
        modes = (
            ("JSON API readings", "web"),
            ("SOAP GetMeterReadings", "soap"),
            ("JSON API, 2 processes", "web2"),
        )
        page: list[float] = []
        page_cpu = 0.0
        for _ in range(args.rounds):  # alternate: a noisy neighbour hurts both alike
            for label, mode in modes:
                port = free_port()
                child = Child(url, port, args.threads, mode)
                try:
                    if mode in ("web", "web2"):
                        make = lambda p=port: api_request(  # noqa: E731
                            names[next(counter) % len(names)], 1, p
                        )
                        expect = b'"count":96'
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
                        url=url,
                    )
                    if label not in best or figures["per_s"] > best[label]["per_s"]:
                        best[label] = figures
                    print(
                        f"  {label:<24} {figures['per_s']:6.0f} replies/s  "
                        f"p50 {figures['p50_ms']:5.1f} ms  p99 {figures['p99_ms']:6.1f} ms  "
                        f"server CPU {figures['server_cpu_ms']:.2f} ms/reply  "
                        f"PostgreSQL CPU {figures['db_cpu_ms']:.2f} ms/reply  "
                        f"load {figures['load_average']:.1f}  errors {figures['errors']:.0f}"
                    )
                    if mode == "web" and not page:
                        page, page_cpu = page_times(port, names[0], args.page_calls, child.proc.pid)
                finally:
                    child.stop()
        api, soap = best["JSON API readings"], best["SOAP GetMeterReadings"]
        two = best["JSON API, 2 processes"]
        print()
        print(
            f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} now; "
            f"cheroot {args.threads} threads, {args.clients} keep-alive clients, best of "
            f"{args.rounds} rounds of {args.seconds:.0f}s"
        )
        for label, f in (
            ("JSON API, one meter-day:", api),
            ("SOAP GetMeterReadings, same:", soap),
            ("JSON API, 2 processes:", two),
        ):
            print(
                f"{label:<30} {f['per_s']:7.0f} replies/s  p50 {f['p50_ms']:.1f} ms  "
                f"p99 {f['p99_ms']:.1f} ms  server CPU {f['server_cpu_ms']:.2f} ms/reply  "
                f"PostgreSQL CPU {f['db_cpu_ms']:.2f} ms/reply  (load {f['load_average']:.1f})"
            )
        print(
            f"ratio JSON API / SOAP:         {api['per_s'] / soap['per_s']:7.2f}  "
            "(target: API >= 500/s)"
        )
        print(
            f"meter-month readings page (2,976 values, chart + table), {len(page)} fetches: "
            f"median {statistics.median(page) * 1000:.0f} ms, worst {max(page) * 1000:.0f} ms "
            f"(target < 300 ms); server CPU {page_cpu * 1000:.0f} ms a page"
        )
        result = {
            "api": api,
            "soap": soap,
            "api_two_processes": two,
            "ratio": api["per_s"] / soap["per_s"],
            "page_median_ms": statistics.median(page) * 1000,
            "page_worst_ms": max(page) * 1000,
            "page_server_cpu_ms": page_cpu * 1000,
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
