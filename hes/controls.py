"""Control jobs: remote disconnect / reconnect and clock synchronisation as jobs.

A job targets one device, a group or all devices of an area (the caller resolves
those to :class:`~hes.engine.MeterTarget` s) and carries an IEC 61968-9
EndDeviceControlType code (3.31.0.23 remote disconnect, 3.31.0.18 remote
reconnect, 3.36.0.24 clock set). Jobs can be scheduled and cancelled.

Job lifecycle (explicit transition table)::

    SCHEDULED -> RUNNING -> SUCCEEDED | PARTIAL | FAILED
    SCHEDULED -> CANCELLED

Each device's outcome becomes an EndDeviceEvent with a CIM code (3.31.0.68
disconnected, 3.31.0.42 connected, 3.31.0.85 switch operation failed, 3.36.0.24
clock changed). A disconnect ordered for a meter that is already disconnected
succeeds without operating the relay (``already`` in the outcome).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum, StrEnum

from cim_schemas.codes import event_type
from hes.engine import EnginePolicy, MeterTarget, SessionFactory
from hub.errors import AmihubError, ConfigurationError

REMOTE_DISCONNECT = str(event_type.REMOTE_DISCONNECT)  # 3.31.0.23
REMOTE_RECONNECT = str(event_type.REMOTE_CONNECT)  # 3.31.0.18
CLOCK_SET = str(event_type.CLOCK_SET)  # 3.36.0.24
SUPPORTED = (REMOTE_DISCONNECT, REMOTE_RECONNECT, CLOCK_SET)


class ControlState(IntEnum):
    """Disconnect control (class 70) control_state."""

    DISCONNECTED = 0
    CONNECTED = 1
    READY_FOR_RECONNECTION = 2


class JobState(StrEnum):
    SCHEDULED = "scheduled"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    PARTIAL = "partial"
    FAILED = "failed"
    CANCELLED = "cancelled"


JOB_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.SCHEDULED: frozenset({JobState.RUNNING, JobState.CANCELLED}),
    JobState.RUNNING: frozenset({JobState.SUCCEEDED, JobState.PARTIAL, JobState.FAILED}),
    JobState.SUCCEEDED: frozenset(),
    JobState.PARTIAL: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


class InvalidJobTransition(AmihubError):
    pass


@dataclass(frozen=True)
class ControlCommand:
    control_type: str  # EndDeviceControlType code
    targets: tuple[MeterTarget, ...]
    start: datetime | None = None  # None: as soon as possible
    reason: str | None = None

    def __post_init__(self) -> None:
        if self.control_type not in SUPPORTED:
            raise ConfigurationError(f"control type {self.control_type} is not supported")


@dataclass(frozen=True)
class DeviceOutcome:
    mrid: str
    ok: bool
    event_type: str  # the EndDeviceEventType code reported for it
    detail: str = ""
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass
class ControlJob:
    id: int
    command: ControlCommand
    state: JobState = JobState.SCHEDULED
    history: list[tuple[JobState, datetime]] = field(default_factory=list)
    outcomes: list[DeviceOutcome] = field(default_factory=list)

    def go(self, state: JobState) -> None:
        if state not in JOB_TRANSITIONS[self.state]:
            raise InvalidJobTransition(f"job {self.id}: {self.state} -> {state}")
        self.history.append((self.state, datetime.now(UTC)))
        self.state = state


class ControlJobs:
    """Holds jobs and runs the due ones (call :meth:`run_due` from a scheduler tick)."""

    def __init__(
        self,
        sessions: SessionFactory,
        policy: EnginePolicy | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.sessions = sessions
        self.policy = policy or EnginePolicy()
        self.now = now
        self._jobs: dict[int, ControlJob] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def submit(self, command: ControlCommand) -> ControlJob:
        with self._lock:
            job = ControlJob(next(self._ids), command)
            self._jobs[job.id] = job
            return job

    def get(self, job_id: int) -> ControlJob:
        return self._jobs[job_id]

    def cancel(self, job_id: int) -> ControlJob:
        with self._lock:
            job = self._jobs[job_id]
            job.go(JobState.CANCELLED)  # only a scheduled job can be cancelled
            return job

    def run_due(self) -> list[ControlJob]:
        with self._lock:
            due = [
                j
                for j in self._jobs.values()
                if j.state is JobState.SCHEDULED
                and (j.command.start is None or j.command.start <= self.now())
            ]
            for job in due:
                job.go(JobState.RUNNING)
        for job in due:
            self._run(job)
        return due

    def _run(self, job: ControlJob) -> None:
        with ThreadPoolExecutor(self.policy.concurrency, thread_name_prefix="hes-ctl") as pool:
            job.outcomes = list(
                pool.map(lambda t: self._operate(job.command, t), job.command.targets)
            )
        ok = sum(1 for o in job.outcomes if o.ok)
        job.go(
            JobState.SUCCEEDED
            if ok == len(job.outcomes)
            else JobState.FAILED
            if ok == 0
            else JobState.PARTIAL
        )

    def _operate(self, command: ControlCommand, target: MeterTarget) -> DeviceOutcome:
        failed = (
            str(event_type.CLOCK_CHANGED)
            if command.control_type == CLOCK_SET
            else str(event_type.SWITCH_OPERATION_FAILED)
        )
        try:
            session = self.sessions(target, self.policy.timeout)
        except AmihubError as exc:
            return DeviceOutcome(target.mrid, False, failed, f"{type(exc).__name__}: {exc}")
        try:
            session.associate()
            if command.control_type == CLOCK_SET:
                session.set_clock(self.now())
                offset = abs((session.read_clock() - self.now()).total_seconds())
                session.release()
                return DeviceOutcome(
                    target.mrid,
                    offset < 5,
                    str(event_type.CLOCK_CHANGED),
                    f"clock off by {offset:.1f} s after the set",
                )
            disconnect = command.control_type == REMOTE_DISCONNECT
            wanted = ControlState.DISCONNECTED if disconnect else ControlState.CONNECTED
            done_event = (
                str(event_type.REMOTE_DISCONNECTED)
                if disconnect
                else str(event_type.REMOTE_CONNECTED)
            )
            if session.read_control_state() == wanted:
                session.release()
                return DeviceOutcome(target.mrid, True, done_event, "already")
            session.disconnect() if disconnect else session.reconnect()
            state = session.read_control_state()
            session.release()
            if state != wanted:
                return DeviceOutcome(target.mrid, False, failed, f"control_state is {state}")
            return DeviceOutcome(target.mrid, True, done_event)
        except AmihubError as exc:
            return DeviceOutcome(target.mrid, False, failed, f"{type(exc).__name__}: {exc}")
        finally:
            session.close()


def outcomes_by_type(outcomes: Sequence[DeviceOutcome]) -> dict[str, int]:
    out: dict[str, int] = {}
    for o in outcomes:
        out[o.event_type] = out.get(o.event_type, 0) + 1
    return out
