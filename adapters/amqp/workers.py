"""``amihub serve --workers N``: N worker processes, each running the enabled adapters.

The workers are plain ``amihub serve`` processes (settings from the same
``AMIHUB_CONFIG`` file and environment); the AMQP consumers among them share the
request queue, the broker spreads deliveries over them (``prefetch`` each), and
the store's idempotency and ``SKIP LOCKED`` outbox claims keep them apart. The
supervisor forwards SIGINT/SIGTERM and restarts a worker that dies (after a
pause), so a crash costs only that worker's unacknowledged deliveries, which the
broker hands to the others.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time

log = logging.getLogger("amihub.serve")

#: pause before a worker that exited on its own is started again (seconds)
RESTART_DELAY = 1.0


def worker_command() -> list[str]:
    return [sys.executable, "-m", "hub.cli", "serve", "--workers", "1"]


def run_workers(count: int, env: dict[str, str] | None = None) -> int:
    """Start ``count`` workers and supervise them until SIGINT/SIGTERM; returns the exit code."""
    stop = threading.Event()
    child_env = {**os.environ, **(env or {})}

    def spawn(n: int) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(worker_command(), env=child_env)  # noqa: S603 (our own command)
        log.info("worker %d started (pid %d)", n, proc.pid)
        return proc

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    procs = [spawn(n) for n in range(count)]
    try:
        while not stop.is_set():
            for n, proc in enumerate(procs):
                code = proc.poll()
                if code is not None and not stop.is_set():
                    log.warning("worker %d (pid %d) exited with %s; restarting", n, proc.pid, code)
                    time.sleep(RESTART_DELAY)
                    procs[n] = spawn(n)
            stop.wait(0.5)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0
