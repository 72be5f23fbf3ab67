# mypy: disable-error-code="no-untyped-call"
"""``amihub engine``: a reading/control engine process consuming ``[hes] jobs_queue``.

Several engines (on one machine or many) share the queue; the broker hands each at
most ``--prefetch`` jobs (``[hes] engine_prefetch``) unacknowledged at a time, and
each engine reads at most ``--concurrency`` meters at once (one pool of meter
threads shared by all its jobs). For one job (adapters/dlms/jobs.py has the format):

    delivery -> read the job's meters (hes.engine: retries with backoff, re-reads
             of missing intervals) -> readings and events committed to the store
             (StoreMeterReadings on the bus, one transaction per job) -> reply to reply_to
             (publisher confirm) -> ack

A control job runs through hes.controls and its outcome is recorded by
:class:`hub.headend.ControlJournal` (EndDeviceEvents, published through the outbox).

Nothing is acknowledged before its results are committed: an engine killed
mid-job leaves its unacknowledged jobs to the others (redelivered by the broker);
what it had committed is read and written again, and identical readings count
as ``unchanged``. A job whose run fails (the store is down, a bug) is published
again with ``amihub-attempts`` + 1 after a backoff, and replied ``failed`` after
``[hes] job_attempts``. A meter that does not answer is retried by the engine
(``[hes] attempts``) and reported ``failed`` in the job's reply; the other meters
of the job are stored. SIGTERM/SIGINT: stop taking jobs, finish and ack the ones
in hand, exit. A lost broker connection: reconnect with backoff (``[amqp]
reconnect_delay`` .. ``reconnect_max_delay``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import click
from kombu.connection import Connection
from kombu.message import Message
from kombu.messaging import Consumer

from adapters.amqp.connection import (
    Backoff,
    make_connection,
    reconnecting,
    retry_backoff,
    safe_url,
)
from adapters.amqp.publisher import ConfirmingPublisher, Outgoing, Unroutable
from adapters.dlms.counters import StoredMeterCounters
from adapters.dlms.directory import MeterDirectory
from adapters.dlms.jobs import CONTENT_TYPE, control_request, jobs_queue, reply_body
from adapters.dlms.parameters import command_parameters
from adapters.dlms.sessions import one_at_a_time
from adapters.dlms.wiring import StoreOpener, composition_root
from cim_schemas.errors import AmihubError
from hes.client.session import ClientIdentity
from hes.controls import ControlCommand, ControlJobs
from hes.engine import (
    DEFAULT_REGISTERS,
    EnginePolicy,
    MeterOutcome,
    MeterResult,
    ReadCommand,
    ReadingEngine,
    tcp_sessions,
)
from hes.meter_events import failure_security_events
from hub.headend import ControlJournal, ControlReport, DeviceResult, EventPublisher, HeadEndOutbox
from hub.headend_store import MdmReadingSink
from hub.settings import Settings
from mdm.ports import UnitOfWorkFactory

log = logging.getLogger("amihub.hes.engine")

ATTEMPTS_HEADER = "amihub-attempts"


@dataclass
class _InHand:
    message: Message
    future: Future[tuple[bytes | None, bool]]  # (reply body, retry the job)
    reply_to: str | None
    job: str
    attempts: int
    body: bytes
    redelivered: bool = False


class EngineWorker:
    """Consumes head-end jobs until :meth:`stop`; reconnects with backoff."""

    def __init__(
        self,
        settings: Settings,
        uow_factory: UnitOfWorkFactory,
        directory: MeterDirectory,
        *,
        concurrency: int | None = None,
        prefetch: int | None = None,
        name: str = "engine",
    ) -> None:
        self.settings = settings
        self.hes = settings.hes
        self.amqp = settings.amqp
        self.uow_factory = uow_factory
        self.directory = directory
        self.concurrency = concurrency or self.hes.concurrency
        self.prefetch = prefetch or self.hes.engine_prefetch
        self.name = name
        self.ident = f"{socket.gethostname()}:{os.getpid()}"
        self.policy = EnginePolicy(
            concurrency=self.concurrency, timeout=self.hes.timeout, attempts=self.hes.attempts
        )
        #: the meters' response counters in the store (written and read by its own thread)
        self.counters = StoredMeterCounters(uow_factory)
        self.identity = ClientIdentity(counter_store=self.counters)
        self.sessions = one_at_a_time(
            directory.reloading(tcp_sessions(self.identity)), wait=4 * self.policy.timeout
        )
        self.outbox = HeadEndOutbox(settings)  # meter events, security events, readings
        self.reader = ReadingEngine(
            MdmReadingSink(uow_factory, settings.default_utility, self.outbox),
            policy=self.policy,
            sessions=self.sessions,
            identity=self.identity,
        )
        self.sinks: dict[str, MdmReadingSink] = {}
        self.journal = ControlJournal(uow_factory, EventPublisher(settings))
        self.queue = jobs_queue(self.hes, self.amqp)
        self.publisher = ConfirmingPublisher(self.amqp, name=f"{name}-replies")
        self.stop_event = threading.Event()
        self.consuming = threading.Event()
        self.meters = ThreadPoolExecutor(self.concurrency, thread_name_prefix="engine-meter")
        self.jobs = ThreadPoolExecutor(self.prefetch, thread_name_prefix="engine-job")
        self._in_hand: list[_InHand] = []
        self.done = 0

    # -- the loop ----------------------------------------------------------------------------

    def stop(self) -> None:
        self.stop_event.set()

    def run(self) -> None:
        self.counters.start()  # reads the stored meter counters before the first job
        try:
            reconnecting(self.name, self.amqp, self.stop_event, self._session, self._cleanup)
        finally:
            self.jobs.shutdown(wait=True)
            self.meters.shutdown(wait=True)
            self.counters.close()

    def _cleanup(self, connection: Connection) -> None:
        self.consuming.clear()
        # unacknowledged: the broker delivers them again (to us or another engine)
        self._in_hand.clear()
        self.publisher.close()

    def _session(self, connection: Connection, backoff: Backoff) -> None:
        connection.connect()
        channel = connection.channel()
        if self.amqp.declare:
            self.queue(channel).declare()
        channel.basic_qos(0, self.prefetch, False)
        consumer = Consumer(
            channel, queues=[self.queue], on_message=self._on_message, auto_declare=False
        )
        consumer.consume()
        backoff.reset()
        self.consuming.set()
        log.info(
            "%s consuming %s on %s (prefetch %d jobs, %d meters at once)",
            self.name,
            self.hes.jobs_queue,
            safe_url(connection),
            self.prefetch,
            self.concurrency,
        )
        last_beat = time.monotonic()
        stopping = False
        while True:
            if self.stop_event.is_set() and not stopping:
                stopping = True
                consumer.cancel()  # no new jobs; finish the ones in hand
                log.info("%s stopping: %d job(s) in hand", self.name, len(self._in_hand))
            if stopping and not self._in_hand:
                break
            with contextlib.suppress(TimeoutError, socket.timeout):
                connection.drain_events(timeout=0.05)
            self._settle()
            now = time.monotonic()
            if self.amqp.heartbeat and now - last_beat > 1.0:
                connection.heartbeat_check()
                self.publisher.heartbeat_check()
                last_beat = now
        with contextlib.suppress(Exception):
            channel.close()

    def _on_message(self, message: Message) -> None:
        body = message.body if isinstance(message.body, bytes) else str(message.body).encode()
        headers = message.headers or {}
        try:
            attempts = int(headers.get(ATTEMPTS_HEADER) or 0)
        except (TypeError, ValueError):
            attempts = 0
        with contextlib.suppress(TypeError, ValueError):
            attempts = max(attempts, int(headers.get("x-delivery-count") or 0))
        props = message.properties
        job = str(props.get("correlation_id") or props.get("message_id") or "")
        redelivered = bool(message.delivery_info.get("redelivered")) or attempts > 0
        future = self.jobs.submit(self.execute, body, attempts, redelivered)
        self._in_hand.append(
            _InHand(message, future, props.get("reply_to") or None, job, attempts, body)
        )

    def _settle(self) -> None:
        """Reply and ack the jobs that finished (in the connection's thread)."""
        finished = [h for h in self._in_hand if h.future.done()]
        if not finished:
            return
        outgoing: list[Outgoing] = []
        owners: list[_InHand] = []
        for h in finished:
            reply, retry = h.future.result()
            if retry:
                delay = retry_backoff(self.amqp).delay(h.attempts + 1)
                self.stop_event.wait(delay)
                outgoing.append(
                    Outgoing(
                        body=h.body,
                        routing_key=self.hes.jobs_queue,
                        content_type=CONTENT_TYPE,
                        headers={ATTEMPTS_HEADER: h.attempts + 1},
                        message_id=h.job or None,
                        correlation_id=h.job or None,
                        reply_to=h.reply_to,
                        mandatory=True,
                    )
                )
                owners.append(h)
            elif reply is not None and h.reply_to:
                outgoing.append(
                    Outgoing(
                        body=reply,
                        routing_key=h.reply_to,
                        content_type=CONTENT_TYPE,
                        correlation_id=h.job or None,
                        mandatory=True,
                    )
                )
                owners.append(h)
        failures = self.publisher.publish(outgoing) if outgoing else {}
        failed_owners = set()
        for index, error in failures.items():
            if isinstance(error, Unroutable) and outgoing[index].routing_key != self.hes.jobs_queue:
                log.warning("reply of job %s dropped: %s", owners[index].job, error)
                continue
            failed_owners.add(id(owners[index]))
        for h in finished:
            self._in_hand.remove(h)
            if id(h) in failed_owners:
                h.message.requeue()
            else:
                h.message.ack()
                self.done += 1

    # -- one job -----------------------------------------------------------------------------

    def execute(
        self, body: bytes, attempts: int, redelivered: bool = False
    ) -> tuple[bytes | None, bool]:
        """Run one job; returns (reply, retry). Never raises."""
        try:
            job = json.loads(body)
            kind = job.get("kind")
            job_id = str(job.get("job"))
        except (ValueError, AttributeError) as exc:
            log.error("%s: unreadable job dropped: %s", self.name, exc)
            return None, False
        try:
            job["redelivered"] = redelivered
            if kind == "read":
                return self.read(job, attempts), False
            if kind == "control":
                return self.control(job, attempts), False
            log.error("%s: job %s of unknown kind %r dropped", self.name, job_id, kind)
            return reply_body(job_id, str(kind), "failed", self.ident, [], attempts=attempts), False
        except Exception as exc:
            last = attempts + 1 >= self.hes.job_attempts
            log.warning(
                "%s: job %s failed on attempt %d (%s: %s)%s",
                self.name,
                job_id,
                attempts + 1,
                type(exc).__name__,
                exc,
                "; giving up" if last else "; retried",
            )
            if not last:
                return None, True
            meters = [
                {"mrid": m, "outcome": "failed", "error": f"{type(exc).__name__}: {exc}"}
                for m in job.get("meters") or job.get("devices") or []
            ]
            return reply_body(
                job_id, str(kind), "failed", self.ident, meters, attempts=attempts + 1
            ), False

    def _sink(self, utility: str | None) -> MdmReadingSink:
        code = utility or self.settings.default_utility
        sink = self.sinks.get(code)
        if sink is None:
            sink = self.sinks.setdefault(code, MdmReadingSink(self.uow_factory, code, self.outbox))
        return sink

    def read(self, job: dict[str, Any], attempts: int) -> bytes:
        registers = job.get("registers")
        known = [m for m in job["meters"] if m in self.directory]
        command = ReadCommand(
            tuple(self.directory[m] for m in known),
            datetime.fromisoformat(job["start"]),
            datetime.fromisoformat(job["end"]),
            registers=DEFAULT_REGISTERS if registers is None else tuple(registers),
            read_events=bool(job.get("events")),
            profile_channels=(
                tuple(job["profile_channels"]) if job.get("profile_channels") else None
            ),
        )
        futures = [self.meters.submit(self.reader.read_meter, t, command) for t in command.targets]
        results: list[MeterResult] = [f.result() for f in futures]
        types = job.get("types")
        for r in results:
            if types is not None:  # only these ReadingTypes are stored
                r.readings = [x for x in r.readings if x.reading_type in types]
            if job.get("events_in_window"):  # the meter's log holds more: the window's only
                r.events = [e for e in r.events if command.start < e.ts <= command.end]
        stats, events = self._sink(job.get("utility")).write(results)  # raises: job retried
        meters = [
            {
                "mrid": r.mrid,
                "outcome": r.outcome.value,
                "error": r.error,
                "readings": len(r.readings),
                "missing": len(r.missing),
                "attempts": r.attempts,
            }
            for r in results
        ] + [
            {"mrid": m, "outcome": "failed", "error": "no head-end address", "readings": 0}
            for m in job["meters"]
            if m not in self.directory
        ]
        ok = sum(1 for r in results if r.outcome is MeterOutcome.DONE)
        state = (
            "succeeded"
            if ok == len(meters)
            else "failed"
            if not any(r.readings for r in results)
            else "partial"
        )
        log.info(
            "%s: job %s: %d/%d meter(s) done, %d stored, %d unchanged, %d superseded",
            self.name,
            job["job"],
            ok,
            len(meters),
            stats.stored,
            stats.unchanged,
            stats.superseded,
        )
        return reply_body(
            str(job["job"]),
            "read",
            state,
            self.ident,
            meters,
            {
                "stored": stats.stored,
                "unchanged": stats.unchanged,
                "superseded": stats.superseded,
                "events": events,
            },
            attempts + 1,
            redelivered=bool(job.get("redelivered")),
        )

    def control(self, job: dict[str, Any], attempts: int) -> bytes:
        request = control_request(job)
        missing = [d for d in request.devices if d not in self.directory]
        if missing:
            raise AmihubError(f"no head-end address for {', '.join(missing)}")
        jobs = ControlJobs(self.sessions, self.policy)
        # the request's own parameters; a firmware image from this engine's [hes]
        # firmware_dir, checked against the request's SHA-256 when the job runs
        jobs.submit(
            ControlCommand(
                request.control_type,
                tuple(self.directory[d] for d in request.devices),
                None,
                request.reason,
                command_parameters(request.parameters, self.hes.firmware_dir),
            )
        )
        [done] = jobs.run_due()
        report = ControlReport(
            request,
            done.state.value,
            tuple(DeviceResult(o.mrid, o.ok, o.event_type, o.detail, o.at) for o in done.outcomes),
            tuple(
                failure_security_events(
                    ((o.mrid, o.security_failure, o.at) for o in done.outcomes), "control"
                )
            ),
        )
        self.journal.record_report(report)
        return reply_body(
            request.job_id,
            "control",
            report.state,
            self.ident,
            [
                {"mrid": r.device_mrid, "outcome": "done" if r.ok else "failed", "error": r.detail}
                for r in report.results
            ],
            attempts=attempts + 1,
        )

    def close(self) -> None:
        self.stop()
        self.publisher.close()
        self.counters.close()


def install_signals(stop: Callable[[], None]) -> None:
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop())


@dataclass(frozen=True)
class FleetRead:
    """What a fleet read did: jobs published (0 in-process), meters by outcome, the
    store's counts (none when the jobs were published without waiting)."""

    jobs: int
    meters: int
    outcomes: dict[str, int]
    stats: dict[str, int]
    seconds: float
    #: the meters that failed or were read in part: mRID -> the reason
    failed: dict[str, str] = field(default_factory=dict)


def fleet_read(
    settings: Settings,
    start: datetime,
    end: datetime,
    *,
    job_meters: int | None = None,
    wait: bool = True,
    registers: tuple[str, ...] | None = None,
    profile_channels: tuple[str, ...] | None = None,
    events: bool = True,
    store: StoreOpener,
) -> FleetRead:
    """Read every meter of ``[hes] manifest`` over (start, end] into the store: jobs of
    ``job_meters`` for ``amihub engine`` processes with ``[hes] dispatch = "amqp"``
    (waiting for their replies unless ``wait`` is False), else in-process
    (hes.engine.ReadingEngine with ``[hes] concurrency``), as before. ``events``: the
    window's meter events too (stored once, published as created EndDeviceEvents).
    ``store``: the composition root's store (``hub.bootstrap.open_store``)."""
    import uuid

    from adapters.dlms.headend import directory_from_settings
    from adapters.dlms.jobs import JobDispatcher, collect
    from cim_schemas.errors import ConfigurationError

    directory = directory_from_settings(settings.hes)
    if directory is None:
        raise ConfigurationError("a fleet read needs [hes] manifest")
    meters = sorted(directory)
    started = time.perf_counter()
    outcomes: dict[str, int] = {}
    stats: dict[str, int] = {}
    if settings.hes.dispatch == "amqp":
        from kombu.entity import Queue

        dispatcher = JobDispatcher(settings.hes, settings.amqp, name="hes-fleet-read")
        try:
            if not wait:
                ids = dispatcher.publish_reads(
                    meters,
                    start,
                    end,
                    registers=registers,
                    job_meters=job_meters,
                    profile_channels=profile_channels,
                    events=events,
                    events_in_window=events,
                )
                return FleetRead(len(ids), len(meters), {}, {}, time.perf_counter() - started)
            with make_connection(settings.amqp, "hes-fleet-read-replies") as connection:
                channel = connection.channel()
                reply = Queue(f"amihub.hes.reply.{uuid.uuid4().hex}", exclusive=True)
                reply(channel).declare()
                ids = dispatcher.publish_reads(
                    meters,
                    start,
                    end,
                    reply_to=reply.name,
                    registers=registers,
                    job_meters=job_meters,
                    profile_channels=profile_channels,
                    events=events,
                    events_in_window=events,
                )
                replies = collect(connection, reply.name, ids, settings.hes.job_timeout)
        finally:
            dispatcher.close()
        failed: dict[str, str] = {}
        for r in replies:
            for m in r["meters"]:
                outcomes[m["outcome"]] = outcomes.get(m["outcome"], 0) + 1
                if m["outcome"] in ("failed", "partial"):
                    failed[m["mrid"]] = m.get("error") or f"{m.get('missing', 0)} missing"
            for key, value in r["stats"].items():
                stats[key] = stats.get(key, 0) + int(value)
        return FleetRead(
            len(ids), len(meters), outcomes, stats, time.perf_counter() - started, failed
        )
    with store(settings) as uow_factory:
        #: the meters' counters are checked against, and recorded in, the store (as the
        #: engines and the in-process head-end do): a replayed answer of an earlier run fails
        counters = StoredMeterCounters(uow_factory)
        try:
            identity = ClientIdentity(counter_store=counters)
            reader = ReadingEngine(
                MdmReadingSink(uow_factory, settings.default_utility, HeadEndOutbox(settings)),
                policy=EnginePolicy(
                    concurrency=settings.hes.concurrency,
                    timeout=settings.hes.timeout,
                    attempts=settings.hes.attempts,
                ),
                sessions=directory.reloading(tcp_sessions(identity)),
                identity=identity,
            )
            report = reader.run(
                ReadCommand(
                    tuple(directory[m] for m in meters),
                    start,
                    end,
                    registers=DEFAULT_REGISTERS if registers is None else registers,
                    profile_channels=profile_channels,
                    read_events=events,
                    events_in_window=events,
                )
            )
        finally:
            counters.close()  # the counters of this run written before the store goes
    for result in report.results:
        outcomes[result.outcome.value] = outcomes.get(result.outcome.value, 0) + 1
    stats = {
        "stored": report.stats.stored,
        "unchanged": report.stats.unchanged,
        "superseded": report.stats.superseded,
        "events": report.events_stored,
    }
    return FleetRead(
        0, len(meters), outcomes, stats, time.perf_counter() - started, report.failures()
    )


def _settings(ctx: click.Context) -> Settings:
    """The settings ``amihub`` read (``--config``), else read now."""
    root = ctx.find_root().obj
    known = root.get("settings") if isinstance(root, dict) else None
    if isinstance(known, Settings):
        return known
    from hub.settings import load_settings

    return load_settings()


def _needs_broker(settings: Settings, what: str) -> None:
    """An engine, or a read dispatched to engines, on the in-process ``memory://`` transport
    would wait forever for jobs or replies no other process can send: refuse it."""
    from cim_schemas.errors import ConfigurationError

    if settings.amqp.url.startswith("memory://"):
        raise ConfigurationError(
            f"{what} needs RabbitMQ: set [amqp] url (AMIHUB_AMQP__URL) to an amqp:// or "
            "amqps:// URL (memory:// reaches this process only)"
        )


@click.group(invoke_without_command=True)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 1024),
    default=None,
    help="Meters read at once by this engine (default: [hes] concurrency).",
)
@click.option(
    "--prefetch",
    type=click.IntRange(1, 1000),
    default=None,
    help="Jobs taken from the broker at a time (default: [hes] engine_prefetch).",
)
@click.pass_context
def engine(ctx: click.Context, concurrency: int | None, prefetch: int | None) -> None:
    """Run a head-end engine: read and control jobs from [hes] jobs_queue over [amqp] url.

    ``amihub engine read`` reads the whole fleet once (a scheduled read, e.g. from cron)."""
    if ctx.invoked_subcommand is not None:
        return
    settings = _settings(ctx)
    _needs_broker(settings, "amihub engine (jobs come from [hes] jobs_queue)")
    from hub.logs import setup_logging

    setup_logging(settings.log_level, settings.log_format)
    root = composition_root(ctx)
    with root.engine_worker(settings, concurrency=concurrency, prefetch=prefetch) as worker:
        install_signals(worker.stop)
        worker.run()
    click.echo(f"engine stopped after {worker.done} job(s)", err=True)


@engine.command("read")
@click.option(
    "--hours",
    type=click.IntRange(1, 24 * 40),
    default=24,
    show_default=True,
    help="Load profile window ending at the last complete interval.",
)
@click.option(
    "--job-meters",
    type=click.IntRange(1, 100_000),
    default=None,
    help="Meters per job (default: [hes] job_meters).",
)
@click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="Wait for every job's reply (dispatch = amqp).",
)
@click.option(
    "--events/--no-events",
    default=True,
    show_default=True,
    help="Read the meters' event logs too (the window's events, published as alarms).",
)
@click.pass_context
def read_command(
    ctx: click.Context, hours: int, job_meters: int | None, wait: bool, events: bool
) -> None:
    """Read every meter of [hes] manifest into the store: jobs for the engines ([hes]
    dispatch = "amqp") or in-process (the default). Every meter that failed or was read
    in part is printed with the reason on stderr; then the exit code is 1."""
    from datetime import UTC, timedelta

    from hes.simulator.meter import interval_end, interval_index

    settings = _settings(ctx)
    if settings.hes.dispatch == "amqp":
        _needs_broker(settings, '[hes] dispatch = "amqp"')
    end = interval_end(interval_index(datetime.now(UTC)) - 1)
    done = fleet_read(
        settings,
        end - timedelta(hours=hours),
        end,
        job_meters=job_meters,
        wait=wait,
        events=events,
        store=composition_root(ctx).open_store,
    )
    how = f"{done.jobs} job(s) via {settings.hes.jobs_queue}" if done.jobs else "in-process"
    click.echo(f"{done.meters} meters, {how}, {done.seconds:.2f} s")
    for outcome, n in sorted(done.outcomes.items()):
        click.echo(f"{outcome:>8}: {n}")
    if done.stats:
        click.echo(" ".join(f"{k} {v}" for k, v in sorted(done.stats.items())))
    if done.failed:
        click.echo(
            f"{len(done.failed)} of {done.meters} meter(s) failed or read in part:", err=True
        )
        for mrid, reason in sorted(done.failed.items()):
            click.echo(f"  {mrid}: {reason}", err=True)
        raise SystemExit(1)
