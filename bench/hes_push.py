"""The push listener under load: N simulated meters push one ciphered DataNotification
each to the ``[hes.push]`` service (built as ``amihub serve`` builds it) on PostgreSQL,
every push on its own TCP connection as meters do (``--per-connection K``: K pushes a
connection, as a gateway would send them); readings stored and published (a SOAP
subscriber is configured, so every batch writes its outbox messages).

The frames are ciphered beforehand and sent by a child process (``--senders``
threads), so the hub process measured does only the listener's and the writer's work.
Reported: wall time from the first connection until the last push is stored, pushes
per second, batches, the hub process' CPU seconds in that time.

Usage: ``python -m bench.hes_push [--meters N] [--senders S] [--per-connection K]
[--batch-wait SECONDS]``
(PostgreSQL from ``AMIHUB_BENCH_POSTGRES_URL`` / ``AMIHUB_TEST_POSTGRES_URL``).
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SEED = 4


def send(port: int, frames_file: Path, senders: int, per_connection: int) -> None:
    """The child: ``per_connection`` frames a connection, ``senders`` threads."""
    frames = [bytes.fromhex(line) for line in frames_file.read_text().split()]
    parts = [frames[i::senders] for i in range(senders)]

    def run(part: list[bytes]) -> None:
        for start in range(0, len(part), per_connection):
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                sock.sendall(b"".join(part[start : start + per_connection]))

    threads = [threading.Thread(target=run, args=(p,)) for p in parts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def measure(meters: int, senders: int, batch_wait: float, per_connection: int) -> dict[str, float]:
    from adapters.dlms.push_service import PushService
    from bench.common import scratch_database
    from hes.cli import fleet_manifest
    from hes.simulator.fleet import Fleet
    from hub.bootstrap import bootstrap
    from hub.serve import enabled_services
    from hub.settings import load_settings
    from mdm.model import EndDevice

    fleet = Fleet.build(meters, 1, seed=SEED)
    with tempfile.TemporaryDirectory() as tmp, scratch_database("amihub_bench_push") as url:
        manifest = Path(tmp) / "fleet.json"
        manifest.write_text(json.dumps(fleet_manifest(fleet)))
        settings = load_settings(
            database_url=url,
            default_utility="ACME",
            soap={"subscribers": {"MeterReadings": ["http://127.0.0.1:9/ws/SendMeterReadings"]}},
            hes={
                "manifest": manifest,
                "simulated_seed": SEED,
                "push": {"enabled": True, "port": 0, "batch_wait": batch_wait},
            },
        )
        app = bootstrap(settings, migrate=True)
        with app.uow_factory() as uow:
            utility = uow.utilities.get("ACME")
            assert utility is not None
            assert utility.id is not None
            for m in fleet.meters:
                uow.devices.add(utility.id, EndDevice(f"MTR-{m.serial}", "ACME"))
            uow.commit()
        (service,) = enabled_services(app)
        assert isinstance(service, PushService)
        now = fleet.now()
        frames = Path(tmp) / "frames.txt"
        frames.write_text("\n".join(fleet.push_frame(i, at=now).hex() for i in range(meters)))
        service.start()
        try:
            cpu0, t0 = time.process_time(), time.perf_counter()
            command = [sys.executable, "-m", "bench.hes_push", "--senders", str(senders)]
            command += ["--per-connection", str(per_connection)]
            child = subprocess.Popen([*command, "--send", str(service.port), str(frames)])
            while service.writer.totals.pushes < meters:
                if child.poll() not in (None, 0):
                    raise SystemExit("the sender failed")
                time.sleep(0.01)
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            child.wait(30)
            totals = service.writer.totals
            result = {
                "meters": meters,
                "senders": senders,
                "pushes_per_connection": per_connection,
                "seconds": round(wall, 2),
                "pushes_per_s": round(meters / wall),
                "batches": totals.batches,
                "readings_stored": totals.readings_stored,
                "readings_published": totals.readings_published,
                "refused": totals.refused,
                "hub_cpu_s": round(cpu, 2),
            }
        finally:
            service.stop()
            app.close()
    return result


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hes_push")
    parser.add_argument("--meters", type=int, default=2000)
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--batch-wait", type=float, default=0.2)
    parser.add_argument("--per-connection", type=int, default=1, help="pushes a connection")
    parser.add_argument("--send", nargs=2, metavar=("PORT", "FRAMES"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.send:
        send(int(args.send[0]), Path(args.send[1]), args.senders, args.per_connection)
        return
    print(json.dumps(measure(args.meters, args.senders, args.batch_wait, args.per_connection)))


if __name__ == "__main__":
    main(sys.argv[1:])
