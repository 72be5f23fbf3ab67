"""``hub.headend.HeadEnd`` on the amihub head-end (``hes.controls``, ``hes.engine``).

Control jobs: :meth:`DlmsHeadEnd.submit` writes the job to the head-end job table
(``uow.hes_jobs``) in the request's transaction, so a rolled-back request never runs;
:meth:`DlmsHeadEnd.cancel` is a state change in the cancel's transaction. The table
is the source of truth: :meth:`DlmsHeadEnd.run_due` is one scheduler tick
(:class:`hub.headend_scheduler.JobScheduler`: claim due jobs with a lease, run them
here or publish them to ``amihub engine`` processes with ``[hes] dispatch = "amqp"``,
record the outcomes); :meth:`start` runs ticks in a background thread. Read schedules
(future and recurring MeterReadSchedules) are jobs of the same table.

Control types (``control_types``, all of ``hes.controls.SUPPORTED``): 3.31.0.23 /
3.31.0.18 remote disconnect / reconnect, 3.36.0.24 clock set, 3.15.0.18 / 3.15.0.23
load limit set / clear, 3.20.0.24 ToU calendar update, 3.11.0.24 firmware update. The
parameters of the last three come with the request (``ControlRequest.parameters``,
checked by the hub); a firmware image is loaded from ``firmware_dir`` (``[hes]
firmware_dir``) when the job runs and checked against the request's SHA-256 first
(:mod:`adapters.dlms.parameters`).

On-demand reads use :class:`hes.engine.ReadingEngine` with a sink that only
collects: the route stores the readings in its own transaction.

One :class:`hes.client.session.ClientIdentity` serves controls and reads, so the
meters' invocation counters are tracked across both, and one association at a
time goes to a meter (:mod:`adapters.dlms.sessions`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from adapters.dlms.counters import StoredMeterCounters
from adapters.dlms.directory import MeterDirectory
from adapters.dlms.parameters import command_parameters
from adapters.dlms.sessions import one_at_a_time
from cim_schemas.errors import AmihubError, ConfigurationError
from hes.client.session import ClientIdentity
from hes.controls import (
    SUPPORTED,
    ControlCommand,
    ControlJobs,
)
from hes.engine import (
    EnginePolicy,
    MeterResult,
    ReadCommand,
    ReadingEngine,
    SessionFactory,
    result_events,
    tcp_sessions,
)
from hes.meter_events import failure_security_events
from hes.security.keyfile import KeyStoreFile, KeyStoreUnreadable
from hes.security.keywatch import KeyStoreSource
from hub.bus import MessageBus
from hub.headend import (
    ControlJournal,
    ControlReport,
    ControlRequest,
    DeviceResult,
    JobNotCancellable,
    MeterRead,
    UnknownJob,
)
from hub.headend_jobs import InProcessJobs, JobDispatch, failed_report
from hub.headend_scheduler import JobRecorder, JobScheduler
from hub.headend_store import ResultPublisher
from hub.metrics import METER_READS
from hub.read_targets import ConfiguredTargets
from hub.settings import HesSettings
from mdm.group_targets import group_targets
from mdm.hes_jobs import SCHEDULED, HeadEndJob, JobKind
from mdm.model import IngestStats
from mdm.ports import UnitOfWork, UnitOfWorkFactory

log = logging.getLogger("amihub.hes")


class _Collect:
    """ReadingSink that stores nothing: the caller stores the results."""

    def write(self, results: Sequence[MeterResult]) -> tuple[IngestStats, int]:
        return IngestStats(), 0


class DlmsHeadEnd:
    def __init__(
        self,
        directory: MeterDirectory,
        recorder: JobRecorder,
        uow_factory: UnitOfWorkFactory,
        *,
        policy: EnginePolicy | None = None,
        tick_seconds: float = 1.0,
        lease_seconds: float = 60.0,
        max_attempts: int = 3,
        runner: JobDispatch | None = None,
        identity: ClientIdentity | None = None,
        sessions: SessionFactory | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        firmware_dir: Path | None = None,
        publisher: ResultPublisher | None = None,
        bus: MessageBus | None = None,
    ) -> None:
        self.directory = directory
        #: where firmware images named by requests are loaded from
        self.firmware_dir = firmware_dir
        #: the EndDeviceControlType codes executed (the hub refuses others with 2013)
        self.control_types = frozenset(SUPPORTED)
        self.recorder = recorder
        self.policy = policy or EnginePolicy(concurrency=8)
        self.uow_factory = uow_factory
        self.tick_seconds = tick_seconds
        self.clock = clock
        #: the meters' response counters in the store (written and read by its own thread)
        self.counters = StoredMeterCounters(uow_factory)
        self.identity = identity or ClientIdentity(counter_store=self.counters)
        # one association at a time per meter: scheduler jobs and on-demand reads share it
        self.sessions = one_at_a_time(
            directory.reloading(sessions or tcp_sessions(self.identity)),
            wait=4 * self.policy.timeout,
        )
        #: where jobs and on-demand reads run (hub.headend_jobs.JobDispatch): this
        #: process, or the engines over RabbitMQ (the composition root chooses)
        self.jobs: JobDispatch = runner or InProcessJobs(
            self.execute,
            self.directory,
            self.sessions,
            self.policy,
            uow_factory,
            publisher,
            bus=bus,
        )
        self.scheduler = JobScheduler(
            uow_factory,
            recorder,
            self.jobs,
            clock=lambda: self.clock(),
            lease_seconds=lease_seconds,
            max_attempts=max_attempts,
            # configured schedules and hub schedules of EndDeviceGroups: at each run
            targets=ConfiguredTargets(
                self.addressable,
                fallback=lambda uow, job: group_targets(uow, job, self.addressable),
            ),
        )
        self._tick = threading.Lock()  # one run_due at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"DlmsHeadEnd({len(self.directory)} meters, scheduler {self.scheduler.owner})"

    # -- HeadEnd ----------------------------------------------------------------------------

    def addressable(self, device_mrid: str) -> bool:
        return device_mrid in self.directory

    def submit(self, uow: UnitOfWork, request: ControlRequest) -> None:
        if request.control_type not in self.control_types:
            raise UnknownJob(f"control type {request.control_type} is not executed here")
        missing = [d for d in request.devices if d not in self.directory]
        if missing:
            raise UnknownJob(f"no head-end address for {', '.join(missing)}")
        uow.hes_jobs.add(
            HeadEndJob(
                utility_id=request.utility_id,
                kind=JobKind.CONTROL,
                mrid=request.job_id,
                spec=request.to_json(),
                targets=request.devices,
                due_at=request.start or request.requested_at,
                created_at=request.requested_at,
                control_type=request.control_type,
                message_id=request.correlation_id,
                start_at=request.start,
            )
        )

    def state(self, utility_id: int, job_id: str) -> str | None:
        """The state of a control job in the job table, or None."""
        with self.uow_factory() as uow:
            job = uow.hes_jobs.get(utility_id, JobKind.CONTROL, job_id)
        return None if job is None else job.state

    def cancel(self, uow: UnitOfWork, utility_id: int, job_id: str) -> ControlRequest:
        job = uow.hes_jobs.get(utility_id, JobKind.CONTROL, job_id)
        if job is None or job.id is None:
            raise UnknownJob(f"no control job {job_id}")
        if job.state != SCHEDULED or not uow.hes_jobs.cancel(job.id, SCHEDULED, self.clock()):
            now = uow.hes_jobs.by_id(job.id)
            state = now.state if now is not None else job.state
            raise JobNotCancellable(
                f"control job {job_id} is {state}: only a scheduled job can be cancelled"
            )
        return ControlRequest.from_json(job.spec)

    def execute(self, request: ControlRequest) -> ControlReport:
        """Run one control job now, in this process (the scheduler's in-process runner)."""
        jobs = ControlJobs(self.sessions, self.policy)
        try:
            command = ControlCommand(
                request.control_type,
                tuple(self.directory[d] for d in request.devices),
                None,
                request.reason,
                command_parameters(request.parameters, self.firmware_dir),
            )
        except (AmihubError, KeyError) as exc:  # no address, no firmware folder here ...
            return failed_report(request, f"{type(exc).__name__}: {exc}", self.clock())
        jobs.submit(command)
        [job] = jobs.run_due()
        return ControlReport(
            request,
            job.state.value,
            tuple(DeviceResult(o.mrid, o.ok, o.event_type, o.detail, o.at) for o in job.outcomes),
            tuple(
                failure_security_events(
                    ((o.mrid, o.security_failure, o.at) for o in job.outcomes),
                    "control",
                )
            ),
        )

    def run_due(self) -> list[ControlReport]:
        """One scheduler tick: claim the due jobs of the job table, run and record them."""
        with self._tick:
            return self.scheduler.tick()

    def read(
        self, devices: Sequence[str], start: datetime, end: datetime, *, events: bool = False
    ) -> list[MeterRead]:
        targets = tuple(self.directory[d] for d in devices)
        engine = ReadingEngine(
            _Collect(), policy=self.policy, sessions=self.sessions, identity=self.identity
        )
        report = engine.run(ReadCommand(targets, start, end, read_events=events))
        for r in report.results:
            METER_READS.labels(r.outcome.value).inc()
        return [
            MeterRead(
                device_mrid=r.mrid,
                outcome=r.outcome.value,
                readings=tuple((x.reading_type, x.ts, x.value, x.quality) for x in r.readings),
                events=tuple(result_events(r)),
                missing=len(r.missing),
                error=r.error,
            )
            for r in report.results
        ]

    # -- scheduler thread ---------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self.counters.start()  # reads the stored meter counters before the first job
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="hes-controls", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.tick_seconds):
            try:
                self.run_due()
            except Exception:  # the scheduler must survive one bad tick
                log.exception("control scheduler tick failed")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None
        self.counters.close()


def directory_from_settings(settings: HesSettings) -> MeterDirectory | None:
    """The meters of ``[hes] manifest``, or None when no manifest is configured."""
    if settings.manifest is None:
        return None
    keystore = None
    if settings.keystore is not None:  # followed: a changed file is re-read (keys change)
        if settings.master_key is None:
            raise ConfigurationError("[hes] keystore needs [hes] master_key")
        try:
            master = bytes.fromhex(settings.master_key.get_secret_value())
        except ValueError:  # the type only: a message could quote key material
            raise ConfigurationError("[hes] keystore: ValueError (master_key)") from None
        keystore = KeyStoreSource(KeyStoreFile(settings.keystore), master)
    try:
        return MeterDirectory.from_manifest(
            settings.manifest,
            mrid_format=settings.mrid_format,
            keystore=keystore,
            simulated_seed=settings.simulated_seed,
        )
    except KeyStoreUnreadable as exc:
        raise ConfigurationError(f"[hes] keystore: {exc.cause} ({exc.path})") from None


def headend_from_settings(
    settings: HesSettings,
    recorder: ControlJournal,
    directory: MeterDirectory | None = None,
    *,
    runner: JobDispatch | None = None,
    publisher: ResultPublisher | None = None,
    bus: MessageBus | None = None,
) -> DlmsHeadEnd | None:
    """A head-end for ``[hes]``, or None when there is no manifest and no directory. Jobs
    run through ``runner`` (the composition root gives the AMQP adapter for ``dispatch =
    "amqp"``), else in this process."""
    if directory is None:
        directory = directory_from_settings(settings)
    if directory is None:
        return None
    return DlmsHeadEnd(
        directory,
        recorder,
        recorder.uow_factory,
        policy=EnginePolicy(
            concurrency=settings.concurrency, timeout=settings.timeout, attempts=settings.attempts
        ),
        tick_seconds=settings.tick_seconds,
        lease_seconds=settings.lease_seconds,
        max_attempts=settings.job_attempts,
        runner=runner,
        firmware_dir=settings.firmware_dir,
        publisher=publisher,
        bus=bus,
    )
