"""Control jobs: relay, clock, load limit, ToU calendar and firmware as jobs.

A job targets one device, a group or all devices of an area (the caller resolves
those to :class:`~hes.engine.MeterTarget` s) and carries an IEC 61968-9
EndDeviceControlType code (3.31.0.23 remote disconnect, 3.31.0.18 remote
reconnect, 3.36.0.24 clock set, 3.15.0.18 / 3.15.0.23 load limit set / clear,
3.20.0.24 ToU calendar update, 3.11.0.24 firmware update) and, for the last
three, its parameters (:class:`LoadLimit`, :class:`CalendarUpdate`,
:class:`FirmwareUpdate` or :class:`FirmwareFile`: an image file loaded when the job
runs and checked against its SHA-256 before the transfer). Jobs can be scheduled and
cancelled.

Job lifecycle (explicit transition table)::

    SCHEDULED -> RUNNING -> SUCCEEDED | PARTIAL | FAILED
    SCHEDULED -> CANCELLED

Each device's outcome becomes an EndDeviceEvent with a CIM code (3.31.0.68
disconnected, 3.31.0.42 connected, 3.31.0.85 switch operation failed, 3.36.0.24
clock changed, 3.15.0.24 / 3.15.0.85 load limit changed / failed, 3.20.0.24 /
3.20.0.85 tariff changed / failed, 3.11.0.24 / 3.11.0.85 firmware changed /
failed). A disconnect ordered for a meter that is already disconnected succeeds
without operating the relay (``already`` in the outcome).

Every job writes, then reads back what it wrote: the threshold; the calendar name
(active after an immediate activation, passive + activation time otherwise); the
active firmware identifier after the image was transferred in blocks, verified
and activated. A firmware transfer that loses its connection associates again
and resumes at the meter's image_first_not_transferred_block_number.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from pathlib import Path

from cim_schemas.codes import event_type
from cim_schemas.errors import AmihubError, ConfigurationError, MeterUnreachable, SecurityViolation
from hes.client.session import MeterSession
from hes.dlms import axdr, cosem_data
from hes.dlms.cosem_data import ActivityCalendar
from hes.engine import EnginePolicy, MeterTarget, SessionFactory

REMOTE_DISCONNECT = str(event_type.REMOTE_DISCONNECT)  # 3.31.0.23
REMOTE_RECONNECT = str(event_type.REMOTE_CONNECT)  # 3.31.0.18
CLOCK_SET = str(event_type.CLOCK_SET)  # 3.36.0.24
LOAD_LIMIT_SET = str(event_type.LOAD_LIMIT_SET)  # 3.15.0.18
LOAD_LIMIT_CLEAR = str(event_type.LOAD_LIMIT_CLEAR)  # 3.15.0.23
TOU_CALENDAR_UPDATE = str(event_type.TARIFF_CHANGE)  # 3.20.0.24
FIRMWARE_UPDATE = str(event_type.FIRMWARE_ACTIVATE)  # 3.11.0.24
SUPPORTED = (
    REMOTE_DISCONNECT,
    REMOTE_RECONNECT,
    CLOCK_SET,
    LOAD_LIMIT_SET,
    LOAD_LIMIT_CLEAR,
    TOU_CALENDAR_UPDATE,
    FIRMWARE_UPDATE,
)
#: control types that run without parameters
PLAIN = (REMOTE_DISCONNECT, REMOTE_RECONNECT, CLOCK_SET, LOAD_LIMIT_CLEAR)

# COSEM objects (class id, OBIS) the jobs use
LIMITER = (71, "0.0.17.0.0.255")
ACTIVITY_CALENDAR = (20, "0.0.13.0.0.255")
IMAGE_TRANSFER = (18, "0.0.44.0.0.255")
FIRMWARE_ID = (1, "1.0.0.2.0.255")  # active firmware identifier


@dataclass(frozen=True)
class LoadLimit:
    """Limiter threshold_normal in W of instantaneous +A; 0 = no limit."""

    threshold_w: int

    def __post_init__(self) -> None:
        if not 0 <= self.threshold_w <= 0xFFFFFFFF:
            raise ConfigurationError(f"load limit {self.threshold_w} W is out of range")


@dataclass(frozen=True)
class CalendarUpdate:
    """A passive activity calendar, activated at ``activate_at`` (None: immediately)."""

    calendar: ActivityCalendar
    activate_at: datetime | None = None


@dataclass(frozen=True)
class FirmwareUpdate:
    """An image and its identifier (the active firmware identifier after activation)."""

    image: bytes = field(repr=False)
    identifier: str
    activate_at: datetime | None = None  # None: right after verification

    @classmethod
    def from_file(
        cls, path: str | Path, identifier: str, activate_at: datetime | None = None
    ) -> FirmwareUpdate:
        return cls(Path(path).read_bytes(), identifier, activate_at)

    def __post_init__(self) -> None:
        if not self.image or not self.identifier:
            raise ConfigurationError("a firmware update needs an image and its identifier")


@dataclass(frozen=True)
class FirmwareFile:
    """A firmware image in a file (the firmware folder), loaded when the job runs and
    checked against ``sha256`` before anything is sent to a meter."""

    path: Path
    identifier: str
    sha256: str  # hex
    activate_at: datetime | None = None

    def load(self) -> FirmwareUpdate:
        """The image, if the file has the expected SHA-256; ControlFailed otherwise."""
        try:
            image = self.path.read_bytes()
        except OSError as exc:
            raise ControlFailed(
                f"firmware image {self.path.name}: {exc.strerror}: not transferred"
            ) from None
        digest = hashlib.sha256(image).hexdigest()
        if digest != self.sha256.lower():
            raise ControlFailed(
                f"firmware image {self.path.name}: SHA-256 is {digest}, expected "
                f"{self.sha256.lower()}: not transferred"
            )
        return FirmwareUpdate(image, self.identifier, self.activate_at)


ControlParameters = LoadLimit | CalendarUpdate | FirmwareUpdate | FirmwareFile
PARAMETERS: dict[str, tuple[type, ...]] = {
    LOAD_LIMIT_SET: (LoadLimit,),
    TOU_CALENDAR_UPDATE: (CalendarUpdate,),
    FIRMWARE_UPDATE: (FirmwareUpdate, FirmwareFile),
}
#: (success, failure) EndDeviceEventType of each control type
EVENTS: dict[str, tuple[str, str]] = {
    CLOCK_SET: (str(event_type.CLOCK_CHANGED), str(event_type.CLOCK_CHANGED)),
    LOAD_LIMIT_SET: (str(event_type.LOAD_LIMIT_CHANGED), str(event_type.LOAD_LIMIT_FAILED)),
    LOAD_LIMIT_CLEAR: (str(event_type.LOAD_LIMIT_CHANGED), str(event_type.LOAD_LIMIT_FAILED)),
    TOU_CALENDAR_UPDATE: (str(event_type.TARIFF_CHANGED), str(event_type.TARIFF_FAILED)),
    FIRMWARE_UPDATE: (str(event_type.FIRMWARE_CHANGED), str(event_type.FIRMWARE_FAILED)),
}


class ImageStatus(IntEnum):
    """Image transfer (class 18) image_transfer_status."""

    NOT_INITIATED = 0
    INITIATED = 1
    VERIFICATION_INITIATED = 2
    VERIFICATION_SUCCESSFUL = 3
    VERIFICATION_FAILED = 4
    ACTIVATION_INITIATED = 5
    ACTIVATION_SUCCESSFUL = 6
    ACTIVATION_FAILED = 7


class ControlFailed(AmihubError):
    """The meter did not do what the job asked (detail in the message)."""


def _int(value: axdr.Value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ControlFailed(f"expected an integer, the meter answered {value!r}")
    return value


def _bytes(value: axdr.Value) -> bytes:
    if not isinstance(value, bytes):
        raise ControlFailed(f"expected an octet-string, the meter answered {value!r}")
    return value


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
    parameters: ControlParameters | None = None

    def __post_init__(self) -> None:
        if self.control_type not in SUPPORTED:
            raise ConfigurationError(f"control type {self.control_type} is not supported")
        wanted = PARAMETERS.get(self.control_type)
        if wanted is not None and not isinstance(self.parameters, wanted):
            raise ConfigurationError(
                f"control type {self.control_type} needs "
                f"{' or '.join(w.__name__ for w in wanted)} parameters"
            )
        if wanted is None and self.parameters is not None:
            raise ConfigurationError(f"control type {self.control_type} takes no parameters")


@dataclass(frozen=True)
class DeviceOutcome:
    mrid: str
    ok: bool
    event_type: str  # the EndDeviceEventType code reported for it
    detail: str = ""
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    #: the meter's answer to the operation was lost or failed authentication, and what
    #: the meter did could not be read back either: the outcome is not known
    unknown: bool = False
    #: a security failure met on the way (``"SecurityViolation: ..."``), also when the
    #: outcome was then settled by reading the meter back
    security_error: str | None = None

    @property
    def security_failure(self) -> str | None:
        """What to record as a security event for this device, if anything."""
        return self.security_error or (None if self.ok else self.detail)


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
        command = job.command
        if isinstance(command.parameters, FirmwareFile):
            # loaded once per job and checked before any meter is touched
            try:
                command = replace(command, parameters=command.parameters.load())
            except ControlFailed as exc:
                failed = EVENTS[FIRMWARE_UPDATE][1]
                job.outcomes = [
                    DeviceOutcome(t.mrid, False, failed, str(exc)) for t in command.targets
                ]
                job.go(JobState.FAILED)
                return
        with ThreadPoolExecutor(self.policy.concurrency, thread_name_prefix="hes-ctl") as pool:
            job.outcomes = list(pool.map(lambda t: self._operate(command, t), command.targets))
        ok = sum(1 for o in job.outcomes if o.ok)
        job.go(
            JobState.SUCCEEDED
            if ok == len(job.outcomes)
            else JobState.FAILED
            if ok == 0
            else JobState.PARTIAL
        )

    def _operate(self, command: ControlCommand, target: MeterTarget) -> DeviceOutcome:
        if isinstance(command.parameters, FirmwareUpdate):
            return self._firmware(command.parameters, target)
        failed = EVENTS.get(command.control_type, ("", str(event_type.SWITCH_OPERATION_FAILED)))[1]
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
            if command.control_type in (LOAD_LIMIT_SET, LOAD_LIMIT_CLEAR):
                limit = command.parameters
                threshold = limit.threshold_w if isinstance(limit, LoadLimit) else 0
                return self._load_limit(session, target, threshold)
            if isinstance(command.parameters, CalendarUpdate):
                return self._calendar(session, target, command.parameters)
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
            try:
                session.disconnect() if disconnect else session.reconnect()
            except (SecurityViolation, MeterUnreachable) as exc:
                # the meter may have operated the relay: what it did is read back
                session.close()
                return self._relay_read_back(
                    target, wanted, done_event, failed, f"{type(exc).__name__}: {exc}"
                )
            state = session.read_control_state()
            session.release()
            if state != wanted:
                return DeviceOutcome(target.mrid, False, failed, f"control_state is {state}")
            return DeviceOutcome(target.mrid, True, done_event)
        except AmihubError as exc:
            return DeviceOutcome(target.mrid, False, failed, f"{type(exc).__name__}: {exc}")
        finally:
            session.close()

    def _relay_read_back(
        self,
        target: MeterTarget,
        wanted: ControlState,
        done_event: str,
        failed: str,
        why: str,
    ) -> DeviceOutcome:
        """The answer to a relay operation was lost or failed authentication: its outcome
        is unknown until a new association reads the disconnector's control_state. The
        outcome then follows the meter; if that read fails too, it stays unknown."""
        security = why if why.startswith("SecurityViolation") else None
        try:
            session = self.sessions(target, self.policy.timeout)
            try:
                session.associate()
                state = session.read_control_state()
                session.release()
            finally:
                session.close()
        except AmihubError as exc:
            return DeviceOutcome(
                target.mrid,
                False,
                failed,
                f"outcome unknown: {why}; control_state not read back "
                f"({type(exc).__name__}: {exc})",
                unknown=True,
                security_error=security,
            )
        try:
            name = ControlState(state).name
        except ValueError:
            name = str(state)
        if state == wanted:
            return DeviceOutcome(
                target.mrid,
                True,
                done_event,
                f"{why}; control_state read back: {name} (operated)",
                security_error=security,
            )
        return DeviceOutcome(
            target.mrid,
            False,
            failed,
            f"{why}; control_state read back: {name} (not operated)",
            security_error=security,
        )

    def _load_limit(
        self, session: MeterSession, target: MeterTarget, threshold: int
    ) -> DeviceOutcome:
        """SET limiter threshold_normal, read it and threshold_active back."""
        ok_event, failed = EVENTS[LOAD_LIMIT_SET]
        session.set_attribute(*LIMITER, 4, cosem_data.double_long_unsigned(threshold))
        normal = _int(session.get_attribute(*LIMITER, 4))
        active = _int(session.get_attribute(*LIMITER, 3))
        session.release()
        if normal != threshold:
            return DeviceOutcome(
                target.mrid, False, failed, f"threshold_normal reads {normal} W, not {threshold}"
            )
        what = f"threshold {threshold} W" if threshold else "no limit"
        return DeviceOutcome(target.mrid, True, ok_event, f"{what} (active {active} W)")

    def _calendar(
        self, session: MeterSession, target: MeterTarget, update: CalendarUpdate
    ) -> DeviceOutcome:
        """Write the passive calendar, activate it (now or at a time), read the name back."""
        ok_event, failed = EVENTS[TOU_CALENDAR_UPDATE]
        cal = update.calendar
        for offset, raw in enumerate(cal.encode()):
            session.set_attribute(*ACTIVITY_CALENDAR, 6 + offset, raw)
        name = cal.name.decode(errors="replace")
        if update.activate_at is None or update.activate_at <= self.now():
            session.invoke(*ACTIVITY_CALENDAR, 1, cosem_data.integer(0))
            active = _bytes(session.get_attribute(*ACTIVITY_CALENDAR, 2))
            session.release()
            if active != cal.name:
                return DeviceOutcome(
                    target.mrid, False, failed, f"active calendar is {active!r}, not {name!r}"
                )
            return DeviceOutcome(target.mrid, True, ok_event, f"calendar {name} active")
        session.set_attribute(*ACTIVITY_CALENDAR, 10, cosem_data.date_time(update.activate_at))
        passive = _bytes(session.get_attribute(*ACTIVITY_CALENDAR, 6))
        at = cosem_data.parse_date_time(_bytes(session.get_attribute(*ACTIVITY_CALENDAR, 10)))
        session.release()
        if passive != cal.name or at != update.activate_at:
            return DeviceOutcome(
                target.mrid,
                False,
                failed,
                f"passive calendar {passive!r} activating at {at}, not {name!r} at "
                f"{update.activate_at}",
            )
        return DeviceOutcome(
            target.mrid,
            True,
            ok_event,
            f"calendar {name} activates at {update.activate_at.isoformat()}",
        )

    def _firmware(self, update: FirmwareUpdate, target: MeterTarget) -> DeviceOutcome:
        """Transfer in blocks (resuming after a lost connection), verify, activate, confirm."""
        ok_event, failed = EVENTS[FIRMWARE_UPDATE]
        ident = update.identifier.encode()
        attempts = max(self.policy.attempts, 1)
        sent: list[int] = []  # block numbers sent, all attempts
        resumed: list[int] = []
        verified = checked = False
        last: AmihubError | None = None
        for attempt in range(attempts):
            if attempt:
                time.sleep(self.policy.backoff.delay(attempt))
            try:
                session = self.sessions(target, self.policy.timeout)
            except MeterUnreachable as exc:
                last = exc
                continue
            except AmihubError as exc:
                return DeviceOutcome(target.mrid, False, failed, f"{type(exc).__name__}: {exc}")
            try:
                session.associate()
                if not verified:
                    if not checked and _bytes(session.get_attribute(*FIRMWARE_ID, 2)) == ident:
                        session.release()
                        return DeviceOutcome(target.mrid, True, ok_event, "already")
                    fresh = not checked  # this job has not initiated a transfer yet
                    checked = True
                    self._transfer(session, update, sent, resumed, fresh=fresh)
                    try:
                        session.invoke(*IMAGE_TRANSFER, 3, cosem_data.integer(0))
                    except MeterUnreachable:
                        raise
                    except AmihubError:
                        status = _int(session.get_attribute(*IMAGE_TRANSFER, 6))
                        session.release()
                        return DeviceOutcome(
                            target.mrid,
                            False,
                            failed,
                            f"image verification failed (image_transfer_status {status}): "
                            f"firmware unchanged",
                        )
                    verified = True
                    if update.activate_at is not None and update.activate_at > self.now():
                        session.release()
                        session.close()
                        time.sleep((update.activate_at - self.now()).total_seconds())
                        session = self.sessions(target, self.policy.timeout)
                        session.associate()
                status = _int(session.get_attribute(*IMAGE_TRANSFER, 6))
                if status == ImageStatus.VERIFICATION_SUCCESSFUL:
                    session.invoke(*IMAGE_TRANSFER, 4, cosem_data.integer(0))
                version = _bytes(session.get_attribute(*FIRMWARE_ID, 2))
                session.release()
                detail = f"{len(sent)} block(s) sent" + (
                    f", resumed at block {', '.join(map(str, resumed))}" if resumed else ""
                )
                if version != ident:
                    return DeviceOutcome(
                        target.mrid,
                        False,
                        failed,
                        f"active firmware is {version!r} after activation, {detail}",
                    )
                return DeviceOutcome(
                    target.mrid, True, ok_event, f"firmware {update.identifier}, {detail}"
                )
            except MeterUnreachable as exc:
                last = exc  # the next attempt resumes where the meter's blocks stop
            except AmihubError as exc:
                return DeviceOutcome(target.mrid, False, failed, f"{type(exc).__name__}: {exc}")
            finally:
                session.close()
        return DeviceOutcome(
            target.mrid, False, failed, f"{type(last).__name__}: {last} ({len(sent)} block(s) sent)"
        )

    @staticmethod
    def _transfer(
        session: MeterSession,
        update: FirmwareUpdate,
        sent: list[int],
        resumed: list[int],
        *,
        fresh: bool,
    ) -> None:
        """Send the blocks the meter lacks (from image_first_not_transferred_block_number)."""
        if not _bool(session.get_attribute(*IMAGE_TRANSFER, 5)):
            raise ControlFailed("image transfer is not enabled on the meter")
        block_size = _int(session.get_attribute(*IMAGE_TRANSFER, 2))
        if block_size <= 0:
            raise ControlFailed(f"image_block_size is {block_size}")
        status = _int(session.get_attribute(*IMAGE_TRANSFER, 6))
        resume = not fresh and status == ImageStatus.INITIATED
        if not resume:
            session.invoke(
                *IMAGE_TRANSFER,
                1,
                cosem_data.structure(
                    cosem_data.octet_string(update.identifier.encode()),
                    cosem_data.double_long_unsigned(len(update.image)),
                ),
            )
        first = _int(session.get_attribute(*IMAGE_TRANSFER, 4))
        if resume:
            resumed.append(first)
        count = -(-len(update.image) // block_size)
        for n in range(first, count):
            block = update.image[n * block_size : (n + 1) * block_size]
            sent.append(n)
            session.invoke(
                *IMAGE_TRANSFER,
                2,
                cosem_data.structure(
                    cosem_data.double_long_unsigned(n), cosem_data.octet_string(block)
                ),
            )
        missing = _int(session.get_attribute(*IMAGE_TRANSFER, 4))
        if missing != count:
            raise ControlFailed(f"the meter still misses block {missing} of {count}")


def _bool(value: axdr.Value) -> bool:
    if not isinstance(value, bool):
        raise ControlFailed(f"expected a boolean, the meter answered {value!r}")
    return value


def outcomes_by_type(outcomes: Sequence[DeviceOutcome]) -> dict[str, int]:
    out: dict[str, int] = {}
    for o in outcomes:
        out[o.event_type] = out.get(o.event_type, 0) + 1
    return out
