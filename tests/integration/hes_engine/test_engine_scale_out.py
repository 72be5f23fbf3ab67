# mypy: disable-error-code="no-untyped-call"
"""``amihub engine`` processes sharing head-end jobs over RabbitMQ, storing into PostgreSQL.

Real servers throughout: RabbitMQ (``amqp_url``), PostgreSQL (``postgres_url``), a
simulated fleet over TCP (HLS-GMAC), engines as ``python -m hub.cli engine``
subprocesses reading the fleet manifest.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kombu.connection import Connection
from kombu.entity import Queue
from sqlalchemy import text

from adapters.dlms.jobs import JobDispatcher, collect
from cim_schemas.codes.reading_type import obis_to_reading_type
from hes.cli import fleet_manifest
from hes.simulator.fleet import Fleet, SimulatorThread
from hes.simulator.meter import interval_end, interval_index
from hub.bootstrap import App, bootstrap
from hub.settings import AmqpSettings, HesSettings, load_settings
from tests.conftest import free_port
from tests.integration.amqp.broker import ready_and_unacked
from tests.unit.hub.conftest import add_meters
from tests.waiting import wait_until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]

REPO = Path(__file__).resolve().parents[3]
SEED = 11


@dataclass
class Setup:
    fleet: Fleet
    app: App
    manifest: Path
    hes: HesSettings
    amqp: AmqpSettings
    database_url: str
    tmp_path: Path
    mrids: list[str]
    dead: str  # a manifest meter nobody listens for
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AMIHUB_")}
        env.update(
            {
                "AMIHUB_DATABASE_URL": self.database_url,
                "AMIHUB_CONFIG": "",  # empty: no settings file
                "AMIHUB_LOG_LEVEL": "INFO",
                "AMIHUB_AMQP__URL": self.amqp.url,
                "AMIHUB_AMQP__RECONNECT_DELAY": "0.2",
                "AMIHUB_HES__MANIFEST": str(self.manifest),
                "AMIHUB_HES__SIMULATED_SEED": str(SEED),
                "AMIHUB_HES__JOBS_QUEUE": self.hes.jobs_queue,
                "AMIHUB_HES__ATTEMPTS": "2",
                "AMIHUB_HES__TIMEOUT": "2",
                "PYTHONPATH": str(REPO),
            }
        )
        return env

    def engine(self, concurrency: int = 4, prefetch: int = 2) -> subprocess.Popen[bytes]:
        log = self.tmp_path / f"engine-{len(self.procs)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    *(sys.executable, "-m", "hub.cli", "engine"),
                    *("--concurrency", str(concurrency), "--prefetch", str(prefetch)),
                ],
                env=self.env(),
                cwd=self.tmp_path,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        wait_for(lambda: "consuming" in log.read_text(errors="replace"), 20, f"{log.name}")
        return proc

    def logs(self) -> str:
        return "\n".join(
            p.read_text(errors="replace") for p in sorted(self.tmp_path.glob("engine-*.log"))
        )


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def make_setup(tmp_path: Path, postgres_url: str, amqp_url: str, meters: int) -> Iterator[Setup]:
    fleet = Fleet.build(meters, free_port(), seed=SEED)
    entries = fleet_manifest(fleet)
    # one more meter in the manifest (keys of index `meters`) on a port nobody listens on
    dead_port = free_port()
    ghost = Fleet.build(meters + 1, dead_port, seed=SEED)
    dead_entry = fleet_manifest(ghost)[meters]
    entries.append(dead_entry)
    manifest = tmp_path / "fleet.json"
    manifest.write_text(json.dumps(entries))
    mrids = [f"MTR-{e['serial']}" for e in entries]
    tag = uuid.uuid4().hex[:8]
    hes = HesSettings(jobs_queue=f"amihub.hes.jobs.test-{tag}", job_timeout=30)
    amqp = AmqpSettings(enabled=True, url=amqp_url, reconnect_delay=0.2)
    settings = load_settings(database_url=postgres_url)
    app = bootstrap(settings, migrate=True)
    add_meters(app, *mrids, install=False)
    setup = Setup(fleet, app, manifest, hes, amqp, postgres_url, tmp_path, mrids[:-1], mrids[-1])
    with SimulatorThread(fleet):
        try:
            yield setup
        finally:
            for proc in setup.procs:
                if proc.poll() is None:
                    proc.kill()
                proc.wait(10)
            with Connection(amqp_url) as conn, conn.channel() as ch:
                ch.queue_delete(hes.jobs_queue)
            app.close()


@pytest.fixture
def fleet60(tmp_path: Path, postgres_url: str, amqp_url: str) -> Iterator[Setup]:
    yield from make_setup(tmp_path, postgres_url, amqp_url, 60)


@pytest.fixture
def fleet6(tmp_path: Path, postgres_url: str, amqp_url: str) -> Iterator[Setup]:
    yield from make_setup(tmp_path, postgres_url, amqp_url, 6)


def window(hours: int) -> tuple[datetime, datetime]:
    end = interval_end(interval_index(datetime.now(UTC)) - 1)
    return end - timedelta(hours=hours), end


def reply_queue(amqp_url: str) -> Iterator[tuple[Connection, str]]:
    name = f"amihub.hes.test-replies-{uuid.uuid4().hex[:8]}"
    with Connection(amqp_url) as conn:
        with conn.channel() as ch:
            Queue(name, durable=True)(ch).declare()
        try:
            yield conn, name
        finally:
            with conn.channel() as ch:
                ch.queue_delete(name)


@pytest.fixture
def replies(amqp_url: str) -> Iterator[tuple[Connection, str]]:
    yield from reply_queue(amqp_url)


def store_counts(setup: Setup) -> dict[str, Any]:
    """Per meter and ReadingType: how many intervals; versions; history rows."""
    with setup.app.engine.connect() as db:
        per = db.execute(
            text(
                "SELECT d.mrid, r.reading_type_id, count(*) FROM reading r "
                "JOIN end_device d ON d.id = r.device_id GROUP BY d.mrid, r.reading_type_id"
            )
        ).all()
        versions = db.execute(text("SELECT max(version) FROM reading")).scalar()
        history = db.execute(text("SELECT count(*) FROM reading_history")).scalar()
    return {
        "meters": {m for m, _, _ in per},
        "series": {n for _, _, n in per},
        "channels": len(per) // max(1, len({m for m, _, _ in per})),
        "max_version": versions,
        "history": history,
    }


def test_two_engines_store_every_meter_exactly_once(
    fleet60: Setup, replies: tuple[Connection, str]
) -> None:
    conn, reply_to = replies
    a = fleet60.engine()
    b = fleet60.engine()
    start, end = window(2)
    dispatcher = JobDispatcher(fleet60.hes, fleet60.amqp)
    try:
        ids = dispatcher.publish_reads(
            fleet60.mrids, start, end, reply_to=reply_to, registers=[], job_meters=6
        )
        assert len(ids) == 10
        got = collect(conn, reply_to, ids, 30)
        assert {r["state"] for r in got} == {"succeeded"}, got
        assert len({r["engine"] for r in got}) == 2  # both engines took jobs
        counts = store_counts(fleet60)
        assert counts["meters"] == set(fleet60.mrids)
        assert counts["series"] == {8}  # 2 h of 15-minute intervals, every channel
        assert counts["max_version"] == 1
        assert counts["history"] == 0
        stored = sum(r["stats"]["stored"] for r in got)

        # the same job again (as after a crash between commit and ack): nothing new
        [again] = dispatcher.publish_reads(
            fleet60.mrids[:6], start, end, reply_to=reply_to, registers=[], prefix="dup"
        )
        [dup] = collect(conn, reply_to, [again], 30)
        first = next(r for r in got if r["meters"][0]["mrid"] == fleet60.mrids[0])
        assert dup["stats"]["stored"] == 0
        assert dup["stats"]["superseded"] == 0
        assert dup["stats"]["unchanged"] == first["stats"]["stored"] > 0
        assert store_counts(fleet60)["history"] == 0
        assert stored == 60 * 8 * counts["channels"]  # each reading written once
    finally:
        dispatcher.close()
    for proc in (a, b):  # graceful stop
        proc.send_signal(signal.SIGTERM)
    assert [p.wait(20) for p in (a, b)] == [0, 0]
    assert "engine stopped after" in fleet60.logs()


def ready_jobs(conn: Connection, queue: str) -> int:
    """Jobs waiting on the queue, not yet delivered to any engine."""
    with conn.channel() as ch:
        return int(ch.queue_declare(queue, passive=True).message_count)


def drain_replies(conn: Connection, queue: str, into: list[dict[str, Any]]) -> None:
    """Every reply waiting on ``queue``, appended to ``into`` (duplicates kept)."""
    with conn.channel() as ch:
        while (m := ch.basic_get(queue, no_ack=True)) is not None:
            into.append(json.loads(m.body))


@pytest.mark.timeout(110)
def test_engine_killed_mid_run_loses_nothing(
    fleet60: Setup, replies: tuple[Connection, str]
) -> None:
    """SIGKILL an engine while it provably holds unacknowledged jobs; another engine,
    started afterwards, gets them redelivered and every interval is stored once.

    The victim runs alone first (2 jobs at a time, prefetch 3), so while jobs are still
    waiting on the queue it always holds some unacknowledged: it takes a new one as
    soon as it acks one. It is killed right after a reply of its own, with jobs
    still ready on the queue. Every reply is counted, whoever sent it and whenever:
    a job the victim replied to but had not acknowledged comes again to the survivor,
    whose second reply is a redelivery like any other (nothing is dropped as a
    duplicate). The replies are read until the broker holds no job, ready or
    unacknowledged, so no reply can still come."""
    conn, reply_to = replies
    victim = fleet60.engine(concurrency=2, prefetch=3)
    start, end = window(6)
    dispatcher = JobDispatcher(fleet60.hes, fleet60.amqp)
    try:
        ids = dispatcher.publish_reads(
            fleet60.mrids, start, end, reply_to=reply_to, registers=[], job_meters=3
        )
        assert len(ids) == 20
        got: list[dict[str, Any]] = []

        def victim_replied_with_jobs_left() -> bool:
            drain_replies(conn, reply_to, got)
            return bool(got) and ready_jobs(conn, fleet60.hes.jobs_queue) > 0

        wait_until(victim_replied_with_jobs_left, 30, "a reply while jobs are still queued")
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        assert len({r["job"] for r in got}) < len(ids) - 3, "killed too late"
        survivor = fleet60.engine(concurrency=4, prefetch=2)

        def every_job_answered_and_acked() -> bool:
            drain_replies(conn, reply_to, got)
            if {r["job"] for r in got} != set(ids):
                return False
            return ready_and_unacked(fleet60.amqp.url, fleet60.hes.jobs_queue) == (0, 0)

        wait_until(every_job_answered_and_acked, 60, "a reply to every job, every job acked")
        drain_replies(conn, reply_to, got)  # replies are published before their ack
        assert {r["job"] for r in got} == set(ids)
        assert {r["state"] for r in got} == {"succeeded"}
        engines = {f":{victim.pid}": "victim", f":{survivor.pid}": "survivor"}
        by = [next(who for tag, who in engines.items() if r["engine"].endswith(tag)) for r in got]
        redelivered = [who for r, who in zip(got, by, strict=True) if r["redelivered"]]
        assert redelivered, "the victim's unacknowledged jobs were not redelivered"
        assert set(redelivered) == {"survivor"}
        # a job answered twice was redelivered: the survivor's answer says so
        for job in {r["job"] for r in got}:
            answers = [(r, who) for r, who in zip(got, by, strict=True) if r["job"] == job]
            assert all(r["redelivered"] for r, _ in answers[1:]), answers
        counts = store_counts(fleet60)
        assert counts["meters"] == set(fleet60.mrids)
        assert counts["series"] == {24}  # 6 h: each interval exactly once
        assert counts["max_version"] == 1
        assert counts["history"] == 0
    finally:
        dispatcher.close()


def test_unreachable_meter_is_retried_then_failed_without_blocking(
    fleet6: Setup, replies: tuple[Connection, str]
) -> None:
    conn, reply_to = replies
    fleet6.engine(concurrency=4, prefetch=2)
    start, end = window(1)
    dispatcher = JobDispatcher(fleet6.hes, fleet6.amqp)
    try:
        [dead_job] = dispatcher.publish_reads(
            [fleet6.dead], start, end, reply_to=reply_to, prefix="dead"
        )
        ids = dispatcher.publish_reads(fleet6.mrids, start, end, reply_to=reply_to, job_meters=2)
        got = collect(conn, reply_to, [dead_job, *ids], 30)
    finally:
        dispatcher.close()
    dead, *others = got
    assert dead["state"] == "failed"
    [meter] = dead["meters"]
    assert meter["outcome"] == "failed"
    assert meter["attempts"] == 2  # [hes] attempts: retried once with backoff
    assert meter["error"]
    assert [r["state"] for r in others] == ["succeeded"] * 3
    counts = store_counts(fleet6)
    assert counts["meters"] == set(fleet6.mrids)  # registers and profile of the others


def test_meter_read_schedule_dispatched_to_engines(fleet6: Setup) -> None:
    """[hes] dispatch = "amqp": the on-demand read becomes jobs; the engine stores them."""
    from hub.samples import meter_read_schedule
    from tests.unit.hub.test_headend_routes import send

    fleet6.engine(concurrency=4, prefetch=2)
    settings = fleet6.app.settings.model_copy(
        update={
            "amqp": fleet6.amqp,
            "hes": fleet6.hes.model_copy(
                update={
                    "dispatch": "amqp",
                    "manifest": fleet6.manifest,
                    "simulated_seed": SEED,
                    "job_meters": 2,
                }
            ),
        }
    )
    app = bootstrap(settings)
    try:
        start, end = window(1)
        profile = str(obis_to_reading_type("1.0.1.8.0.255", interval_minutes=15))
        outcome = send(app, meter_read_schedule(fleet6.mrids, start, end))
        assert outcome.result == "OK", outcome.errors
        assert outcome.counts["meters"] == outcome.counts["read"] == 6
        assert outcome.counts["stored"] == outcome.counts["readings"] > 6 * 4
        assert store_counts(fleet6)["meters"] == set(fleet6.mrids)
        # again, the profile only: every reading is already there, unchanged
        again = send(app, meter_read_schedule(fleet6.mrids, start, end, reading_types=[profile]))
        assert again.result == "OK", again.errors
        assert again.counts["readings"] == again.counts["unchanged"] == 6 * 4
        assert again.counts["stored"] == again.counts["superseded"] == 0
        # a meter that does not answer: 2014, the others stored
        late = send(app, meter_read_schedule([fleet6.dead, *fleet6.mrids[:1]], start, end))
        assert late.result == "PARTIAL"
        assert [e.code for e in late.errors] == ["2014"]
    finally:
        app.close()


def test_fleet_read_command_publishes_jobs_and_waits(fleet6: Setup) -> None:
    """``amihub engine read`` with [hes] dispatch = "amqp": the scheduled read of the fleet."""
    fleet6.engine(concurrency=4, prefetch=2)
    env = fleet6.env()
    env["AMIHUB_HES__DISPATCH"] = "amqp"
    env["AMIHUB_HES__JOB_METERS"] = "2"
    env["AMIHUB_HES__JOB_TIMEOUT"] = "30"
    done = subprocess.run(
        [sys.executable, "-m", "hub.cli", "engine", "read", "--hours", "1"],
        env=env,
        cwd=fleet6.tmp_path,
        capture_output=True,
        timeout=60,
        check=False,
    )
    out, err = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 1, err[-2000:]  # a meter failed: the run is not a success
    assert "7 meters, 4 job(s)" in out  # 6 answering meters and the dead one, 2 a job
    assert "    done: 6" in out
    assert "  failed: 1" in out
    assert "1 of 7 meter(s) failed or read in part:" in err
    assert f"  {fleet6.dead}: " in err  # the failed meter, with its reason
    assert store_counts(fleet6)["meters"] == set(fleet6.mrids)


def test_control_job_run_by_an_engine(fleet6: Setup, replies: tuple[Connection, str]) -> None:
    """A control job (hub.headend.ControlRequest) on the queue: the engine runs it against
    the meters and records the outcome as EndDeviceEvents (ControlJournal)."""
    from adapters.dlms.jobs import control_job
    from hes.simulator.meter import ControlState
    from hub.headend import ControlRequest
    from tests.unit.hub.test_headend_routes import DISCONNECT, events

    conn, reply_to = replies
    fleet6.engine(concurrency=2, prefetch=1)
    with fleet6.app.uow_factory() as uow:
        utility = uow.utilities.get(fleet6.app.settings.default_utility)
    assert utility is not None
    assert utility.id is not None
    request = ControlRequest(
        job_id="ENG-DISC",
        utility_id=utility.id,
        control_type=DISCONNECT,
        devices=tuple(fleet6.mrids[:2]),
        requested_at=datetime.now(UTC),
    )
    dispatcher = JobDispatcher(fleet6.hes, fleet6.amqp)
    try:
        [job] = dispatcher.publish([control_job(request)], reply_to)
        [reply] = collect(conn, reply_to, [job], 30)
    finally:
        dispatcher.close()
    assert reply["kind"] == "control"
    assert reply["state"] == "succeeded", reply
    assert [m.control_state for m in fleet6.fleet.meters[:3]] == [
        ControlState.DISCONNECTED,
        ControlState.DISCONNECTED,
        ControlState.CONNECTED,
    ]
    recorded = events(fleet6.app, job="ENG-DISC", state="succeeded")
    assert sorted(e.device_mrid for e in recorded) == sorted(fleet6.mrids[:2])


def next_reply(conn: Connection, queue: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    with conn.channel() as ch:
        while time.monotonic() < deadline:
            m = ch.basic_get(queue, no_ack=True)
            if m is not None:
                return dict(json.loads(m.body))
            time.sleep(0.05)
    raise AssertionError("no reply")


def close_engine_connection(pid: int) -> int:
    """Close, on the broker, the consuming connection of the engine process ``pid``."""
    out = subprocess.run(
        ["rabbitmqctl", "-q", "list_connections", "pid", "client_properties"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    closed = 0
    for line in out.splitlines():
        conn_pid, _, props = line.partition("\t")
        if f'{{"connection_name","engine {socket.gethostname()}:{pid}"}}' in props:
            subprocess.run(
                ["rabbitmqctl", "-q", "close_connection", conn_pid.strip(), "test: dropped"],
                capture_output=True,
                check=True,
            )
            closed += 1
    return closed


def test_engine_reconnects_after_the_broker_drops_it(
    fleet60: Setup, replies: tuple[Connection, str]
) -> None:
    conn, reply_to = replies
    engine = fleet60.engine(concurrency=4, prefetch=2)
    start, end = window(4)
    dispatcher = JobDispatcher(fleet60.hes, fleet60.amqp)
    try:
        ids = dispatcher.publish_reads(
            fleet60.mrids, start, end, reply_to=reply_to, registers=[], job_meters=3
        )
        first = next_reply(conn, reply_to, 30)  # jobs are flowing
        assert close_engine_connection(engine.pid) == 1
        rest = [i for i in ids if i != first["job"]]
        got = [first, *collect(conn, reply_to, rest, 40)]
    finally:
        dispatcher.close()
    assert {r["state"] for r in got} == {"succeeded"}
    assert engine.poll() is None  # it reconnected, it did not die
    assert "reconnecting in" in fleet60.logs()
    counts = store_counts(fleet60)
    assert counts["meters"] == set(fleet60.mrids)
    assert counts["series"] == {16}
    assert counts["max_version"] == 1
    assert counts["history"] == 0
