"""``hub.headend.HeadEnd`` on the amihub head-end (``hes.controls``, ``hes.engine``).

Control jobs: a submitted request is *held* until its request record is visible in
the store (the transaction that accepted it committed; see
:meth:`hub.headend.ControlJournal.committed`), then handed to
:class:`hes.controls.ControlJobs` with its start time, which owns the lifecycle
(scheduled -> running -> succeeded | partial | failed, scheduled -> cancelled). A held
request whose record never appears (the request was rolled back) is dropped after
``hold_seconds``. :meth:`DlmsHeadEnd.run_due` is one scheduler tick; :meth:`start`
runs ticks in a background thread. Finished jobs go to the recorder (events +
outbox); a report the recorder could not store is retried on the next tick.

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
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from adapters.dlms.directory import MeterDirectory
from adapters.dlms.parameters import command_parameters
from adapters.dlms.sessions import one_at_a_time
from hes.client.session import ClientIdentity
from hes.controls import (
    SUPPORTED,
    ControlCommand,
    ControlJobs,
    InvalidJobTransition,
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
from hes.security.keystore import KeyStore
from hub.errors import AmihubError, ConfigurationError
from hub.headend import (
    ControlReport,
    ControlRequest,
    DeviceResult,
    JobNotCancellable,
    MeterRead,
    UnknownJob,
)
from hub.settings import HesSettings
from mdm.model import IngestStats

log = logging.getLogger("amihub.hes")


class JobRecorder(Protocol):
    """The hub side of job records (:class:`hub.headend.ControlJournal`)."""

    def committed(self, request: ControlRequest) -> bool: ...
    def record_report(self, report: ControlReport) -> object: ...


class JobExists(AmihubError):
    """A job with this id is already held."""


@dataclass
class _Held:
    request: ControlRequest
    since: float  # monotonic
    hes_id: int | None = None  # set once the request is committed and handed to ControlJobs


class _Collect:
    """ReadingSink that stores nothing: the caller stores the results."""

    def write(self, results: Sequence[MeterResult]) -> tuple[IngestStats, int]:
        return IngestStats(), 0


class DlmsHeadEnd:
    def __init__(
        self,
        directory: MeterDirectory,
        recorder: JobRecorder,
        *,
        policy: EnginePolicy | None = None,
        hold_seconds: float = 60.0,
        tick_seconds: float = 1.0,
        identity: ClientIdentity | None = None,
        sessions: SessionFactory | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        firmware_dir: Path | None = None,
    ) -> None:
        self.directory = directory
        #: where firmware images named by requests are loaded from
        self.firmware_dir = firmware_dir
        #: the EndDeviceControlType codes executed (the hub refuses others with 2013)
        self.control_types = frozenset(SUPPORTED)
        self.recorder = recorder
        self.policy = policy or EnginePolicy(concurrency=8)
        self.hold_seconds = hold_seconds
        self.tick_seconds = tick_seconds
        self.identity = identity or ClientIdentity()
        # one association at a time per meter: scheduler jobs and on-demand reads share it
        self.sessions = one_at_a_time(
            sessions or tcp_sessions(self.identity), wait=4 * self.policy.timeout
        )
        self.jobs = ControlJobs(self.sessions, self.policy, now=clock)
        self._held: dict[str, _Held] = {}
        self._by_hes_id: dict[int, str] = {}
        self._unrecorded: list[ControlReport] = []
        self._lock = threading.RLock()  # _held, _by_hes_id
        self._tick = threading.Lock()  # one run_due at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"DlmsHeadEnd({len(self.directory)} meters, {len(self._held)} job(s) held)"

    # -- HeadEnd ----------------------------------------------------------------------------

    def addressable(self, device_mrid: str) -> bool:
        return device_mrid in self.directory

    def submit(self, request: ControlRequest) -> None:
        if request.control_type not in self.control_types:
            raise UnknownJob(f"control type {request.control_type} is not executed here")
        missing = [d for d in request.devices if d not in self.directory]
        if missing:
            raise UnknownJob(f"no head-end address for {', '.join(missing)}")
        with self._lock:
            earlier = self._held.get(request.job_id)
            if earlier is not None and earlier.hes_id is not None:
                raise JobExists(f"control job {request.job_id} exists")
            # an earlier submission never seen committed is replaced: the request is
            # being processed again (its first transaction failed and was rolled back)
            self._held[request.job_id] = _Held(request, time.monotonic())

    def held(self, job_id: str) -> str | None:
        """The state of a held job (``pending`` before its request committed), or None."""
        with self._lock:
            h = self._held.get(job_id)
            if h is None:
                return None
            return "pending" if h.hes_id is None else self.jobs.get(h.hes_id).state.value

    def _hand_over(self, held: _Held) -> None:
        """The request committed: the job enters ControlJobs (scheduled). Under _lock."""
        r = held.request
        job = self.jobs.submit(
            ControlCommand(
                r.control_type,
                tuple(self.directory[d] for d in r.devices),
                r.start,
                r.reason,
                command_parameters(r.parameters, self.firmware_dir),
            )
        )
        held.hes_id = job.id
        self._by_hes_id[job.id] = r.job_id

    def cancel(self, job_id: str) -> ControlRequest:
        with self._lock:
            held = self._held.get(job_id)
            if held is None:
                raise UnknownJob(f"no control job {job_id} is held by the head-end")
            if held.hes_id is None:
                # not handed to ControlJobs yet (its request record was not seen): it
                # simply goes; no store access here, the caller's transaction is open
                del self._held[job_id]
                return held.request
            try:
                self.jobs.cancel(held.hes_id)
            except InvalidJobTransition:
                state = self.jobs.get(held.hes_id).state.value
                raise JobNotCancellable(
                    f"control job {job_id} is {state}: only a scheduled job can be cancelled"
                ) from None
            del self._held[job_id]
            del self._by_hes_id[held.hes_id]
            return held.request

    def run_due(self) -> list[ControlReport]:
        with self._tick:
            self._confirm_held()
            finished = self.jobs.run_due()
            reports = []
            for job in finished:
                with self._lock:
                    job_id = self._by_hes_id.pop(job.id)
                    held = self._held.pop(job_id)
                reports.append(
                    ControlReport(
                        held.request,
                        job.state.value,
                        tuple(
                            DeviceResult(o.mrid, o.ok, o.event_type, o.detail, o.at)
                            for o in job.outcomes
                        ),
                        tuple(
                            failure_security_events(
                                ((o.mrid, o.detail, o.at) for o in job.outcomes if not o.ok),
                                "control",
                            )
                        ),
                    )
                )
            pending, self._unrecorded = self._unrecorded + reports, []
            for report in pending:
                try:
                    self.recorder.record_report(report)
                except AmihubError:
                    log.exception(
                        "control job %s: outcome not recorded, retried next tick",
                        report.request.job_id,
                    )
                    self._unrecorded.append(report)
            return reports

    def _confirm_held(self) -> None:
        """Hand over the held jobs whose request committed; drop the stale ones. The store
        is asked outside _lock: a route's transaction may be waiting for it (cancel)."""
        now = time.monotonic()
        with self._lock:
            waiting = [h for h in self._held.values() if h.hes_id is None]
        for held in waiting:
            job_id = held.request.job_id
            try:
                committed = self.recorder.committed(held.request)
            except AmihubError:
                log.exception("control job %s: cannot check its request record", job_id)
                continue
            with self._lock:
                if self._held.get(job_id) is not held:
                    continue  # cancelled meanwhile
                if committed:
                    self._hand_over(held)
                elif now - held.since > self.hold_seconds:
                    log.warning(
                        "control job %s dropped: its request was not committed in %.0f s",
                        job_id,
                        self.hold_seconds,
                    )
                    del self._held[job_id]

    def read(
        self, devices: Sequence[str], start: datetime, end: datetime, *, events: bool = False
    ) -> list[MeterRead]:
        targets = tuple(self.directory[d] for d in devices)
        engine = ReadingEngine(
            _Collect(), policy=self.policy, sessions=self.sessions, identity=self.identity
        )
        report = engine.run(ReadCommand(targets, start, end, read_events=events))
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


def directory_from_settings(settings: HesSettings) -> MeterDirectory | None:
    """The meters of ``[hes] manifest``, or None when no manifest is configured."""
    if settings.manifest is None:
        return None
    keystore = None
    if settings.keystore is not None:
        if settings.master_key is None:
            raise ConfigurationError("[hes] keystore needs [hes] master_key")
        try:
            master = bytes.fromhex(settings.master_key.get_secret_value())
            keystore = KeyStore.loads(settings.keystore.read_text(encoding="utf-8"), master)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # the type only: a message could quote key material
            raise ConfigurationError(f"[hes] keystore: {type(exc).__name__}") from None
    return MeterDirectory.from_manifest(
        settings.manifest,
        mrid_format=settings.mrid_format,
        keystore=keystore,
        simulated_seed=settings.simulated_seed,
    )


def headend_from_settings(
    settings: HesSettings, recorder: JobRecorder, directory: MeterDirectory | None = None
) -> DlmsHeadEnd | None:
    """A head-end for ``[hes]``, or None when there is no manifest and no directory."""
    if directory is None:
        directory = directory_from_settings(settings)
    if directory is None:
        return None
    return DlmsHeadEnd(
        directory,
        recorder,
        policy=EnginePolicy(
            concurrency=settings.concurrency, timeout=settings.timeout, attempts=settings.attempts
        ),
        hold_seconds=settings.hold_seconds,
        tick_seconds=settings.tick_seconds,
        firmware_dir=settings.firmware_dir,
    )
