"""An on-demand read (create MeterReadSchedule) talks to the meters with no database
transaction of the hub open: while the simulated meters' answers are held back (TCP
relays in front of them keep the head-end's AARQ), PostgreSQL shows no connection of the
hub's database inside a transaction; once the meter answers, the readings are stored
and the request is answered."""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from adapters.dlms import MeterDirectory
from hes.engine import MeterTarget
from hes.simulator.fleet import Fleet, SimulatorThread
from hub.bootstrap import bootstrap
from hub.messages import Outcome
from hub.samples import meter_read_schedule
from tests.conftest import free_port
from tests.unit.hub.conftest import add_meters, reading_count
from tests.unit.hub.test_headend_routes import hub_settings, mrids, send

pytestmark = pytest.mark.postgres


class HeldMeter:
    """A TCP relay to a meter that keeps what the head-end sends until :meth:`release`
    (the meter answers nothing meanwhile); ``connected`` is set when the head-end is
    connected and waiting for the meter."""

    def __init__(self, target: MeterTarget, connected: threading.Event) -> None:
        self.target = target
        self.connected = connected
        self.released = threading.Event()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.server.getsockname()[1])
        self.threads: list[threading.Thread] = []
        self._spawn(self._accept)

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self.threads.append(thread)

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.server.accept()
                self._spawn(self._relay, client)

    def _relay(self, client: socket.socket) -> None:
        with client, socket.create_connection((self.target.host, self.target.port)) as meter:
            answers = threading.Thread(target=self._pipe, args=(meter, client, False))
            answers.start()
            self._pipe(client, meter, True)
            answers.join(30)

    def _pipe(self, source: socket.socket, sink: socket.socket, held: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if held and not self.released.is_set():
                    self.connected.set()
                    self.released.wait()
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def release(self) -> None:
        self.released.set()

    def close(self) -> None:
        self.release()
        with contextlib.suppress(OSError):
            self.server.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        self.server.close()
        for thread in self.threads:
            thread.join(30)


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    f = Fleet.build(2, free_port(), seed=11)
    with SimulatorThread(f):
        yield f


def open_transactions(url: str) -> list[tuple[int, str]]:
    """(pid, state) of the connections to the database of ``url`` (but this one) that
    are inside a transaction."""
    plain = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid, state FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND xact_start IS NOT NULL"
        ).fetchall()
    return [(int(pid), str(state)) for pid, state in rows]


def hub_connections(url: str) -> int:
    plain = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_no_transaction_is_open_while_the_meter_answers(postgres_url: str, fleet: Fleet) -> None:
    meters = mrids(fleet)
    directory = MeterDirectory.from_fleet(fleet)
    # every meter held: none answers, so no result is stored (in a transaction of its
    # own, which the test would see) while it looks
    connected = threading.Event()
    helds = [HeldMeter(directory[m], connected) for m in meters]
    targets = {
        m: dataclasses.replace(directory[m], host="127.0.0.1", port=h.port)
        for m, h in zip(meters, helds, strict=True)
    }
    # long meter timeouts: the meter is held for as long as the test looks
    app = bootstrap(hub_settings(postgres_url, timeout=30.0), migrate=True, meters=targets)
    try:
        add_meters(app, *meters)
        end = datetime.now(UTC).replace(second=0, microsecond=0)
        done: list[Outcome] = []
        request = threading.Thread(
            target=lambda: done.append(
                send(app, meter_read_schedule(meters, end - timedelta(hours=2), end))
            )
        )
        request.start()
        try:
            assert connected.wait(30), "the head-end never reached a held meter"
            # the hub's pool has its connections; none of them is inside a transaction
            assert hub_connections(postgres_url) >= 1
            assert open_transactions(postgres_url) == []
        finally:
            for held in helds:
                held.release()
            request.join(60)
        [outcome] = done
        assert outcome.result == "OK", outcome.errors
        assert outcome.counts["read"] == 2
        assert outcome.counts["stored"] == outcome.counts["readings"] > 2 * 8
        assert reading_count(app) == outcome.counts["stored"]
    finally:
        for held in helds:
            held.close()
        app.close()
