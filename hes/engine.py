"""The reading engine: read a set of meters with bounded concurrency, retries and
re-reads, and hand the results to the MDM store in bulk.

* bounded concurrency: a thread pool of ``policy.concurrency`` workers, each doing
  one meter at a time over a blocking socket (the DLMS work itself is short;
  the GIL is released while waiting on the network);
* retries with exponential backoff (and jitter) for recoverable failures only
  (:class:`cim_schemas.errors.MeterUnreachable`); a security violation or a refused
  association is permanent for the run: recorded, never retried;
* missing-interval detection: after each attempt the profile window is checked
  interval by interval; the next attempt (or a targeted re-read in the same
  association) asks only for the missing runs, never the whole window again;
* results are handed, in batches of ``policy.batch_meters`` meters, to a
  :class:`ReadingSink` the caller gives: the engine never touches a database (the
  application's sink, :class:`hub.headend_store.MdmReadingSink`, stores them).

Lifecycle of one meter in a run (explicit transition table)::

    PENDING -> READING -> DONE | PARTIAL | FAILED
    READING -> WAITING (backoff) -> READING
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Protocol

from cim_schemas.errors import AmihubError, RecoverableError
from hes.client.session import (
    ClientIdentity,
    DlmsMeterSession,
    MeterCredentials,
    MeterEvent,
    MeterSession,
    ProfileRow,
)
from hes.meter_events import end_device_events, security_event, security_kind
from hes.readings import (
    INTERVAL,
    QUALITY_TIME_QUESTIONABLE,
    Reading,
    contiguous_ranges,
    missing_intervals,
    profile_readings,
    register_readings,
)
from mdm.backoff import Backoff
from mdm.model import EndDeviceEvent, IngestStats

log = logging.getLogger(__name__)

DEFAULT_REGISTERS = ("1.0.1.8.0.255", "1.0.2.8.0.255", "1.0.1.8.1.255", "1.0.1.8.2.255")


class MeterOutcome(StrEnum):
    PENDING = "pending"
    READING = "reading"
    WAITING = "waiting"
    DONE = "done"  # everything read
    PARTIAL = "partial"  # some data, some intervals missing
    FAILED = "failed"  # nothing usable


OUTCOME_TRANSITIONS: dict[MeterOutcome, frozenset[MeterOutcome]] = {
    MeterOutcome.PENDING: frozenset({MeterOutcome.READING}),
    MeterOutcome.READING: frozenset(
        {MeterOutcome.WAITING, MeterOutcome.DONE, MeterOutcome.PARTIAL, MeterOutcome.FAILED}
    ),
    MeterOutcome.WAITING: frozenset({MeterOutcome.READING}),
    MeterOutcome.DONE: frozenset(),
    MeterOutcome.PARTIAL: frozenset(),
    MeterOutcome.FAILED: frozenset(),
}


@dataclass(frozen=True)
class MeterTarget:
    """A meter to read: its MDM identity and how to reach it."""

    mrid: str
    host: str
    port: int
    logical_device: int
    credentials: MeterCredentials


@dataclass(frozen=True)
class ReadCommand:
    """Read registers (and clock), the load profile of (start, end], and the event log."""

    targets: tuple[MeterTarget, ...]
    start: datetime
    end: datetime
    registers: tuple[str, ...] = DEFAULT_REGISTERS
    read_events: bool = False
    profile_channels: tuple[str, ...] | None = None  # OBIS of the columns to store; None: all
    #: keep only the log's events of (start, end] (the meter's log holds more)
    events_in_window: bool = False


@dataclass(frozen=True)
class EnginePolicy:
    concurrency: int = 16
    timeout: float = 5.0
    attempts: int = 3
    backoff_base: float = 0.2
    backoff_max: float = 5.0
    clock_tolerance: timedelta = timedelta(seconds=30)
    batch_meters: int = 200  # meters per store transaction
    profile_chunk: timedelta = timedelta(hours=48)  # span asked per profile request

    @property
    def backoff(self) -> Backoff:
        """The wait between attempts on one meter (:mod:`mdm.backoff`)."""
        return Backoff(self.backoff_base, self.backoff_max)


@dataclass
class MeterResult:
    mrid: str
    outcome: MeterOutcome = MeterOutcome.PENDING
    attempts: int = 0
    error: str | None = None
    readings: list[Reading] = field(default_factory=list)
    missing: list[datetime] = field(default_factory=list)
    events: list[MeterEvent] = field(default_factory=list)
    clock_offset: timedelta | None = None
    rereads: int = 0  # targeted profile re-reads of missing runs
    history: list[MeterOutcome] = field(default_factory=list)
    failed_at: datetime | None = None  # when a permanent failure (``error``) happened

    def go(self, outcome: MeterOutcome) -> None:
        if outcome not in OUTCOME_TRANSITIONS[self.outcome]:
            raise RuntimeError(f"meter {self.mrid}: {self.outcome} -> {outcome} not allowed")
        self.history.append(self.outcome)
        self.outcome = outcome


@dataclass(frozen=True)
class RunReport:
    results: tuple[MeterResult, ...]
    stats: IngestStats
    events_stored: int
    seconds: float

    def count(self, outcome: MeterOutcome) -> int:
        return sum(1 for r in self.results if r.outcome is outcome)

    def failures(self) -> dict[str, str]:
        """The meters that failed or were read in part, by mRID, with the reason."""
        return {
            r.mrid: r.error or f"{len(r.missing)} interval(s) missing"
            for r in self.results
            if r.outcome in (MeterOutcome.FAILED, MeterOutcome.PARTIAL)
        }


def result_events(result: MeterResult, source: str = "read") -> list[EndDeviceEvent]:
    """The meter's events (hes.meter_events: CIM codes, stable mRIDs; unknown codes kept)
    and, when the read failed a security check, its security event."""
    events = end_device_events(result.mrid, result.events)
    kind = security_kind(result.error)
    if kind is not None and result.error is not None:
        at = result.failed_at or datetime.now(UTC)
        events.append(security_event(result.mrid, kind, at, reason=result.error, source=source))
    return events


class ReadingSink(Protocol):
    """Where the engine hands each batch of meter results (``policy.batch_meters``
    meters): the application's store (:class:`hub.headend_store.MdmReadingSink`), a
    counter (``amihub hes read``), a list in tests. Returns what the batch stored:
    readings and new events."""

    def write(self, results: Sequence[MeterResult]) -> tuple[IngestStats, int]: ...


SessionFactory = Callable[[MeterTarget, float], MeterSession]


def tcp_sessions(identity: ClientIdentity) -> SessionFactory:
    def factory(target: MeterTarget, timeout: float) -> MeterSession:
        return DlmsMeterSession.connect(
            target.host,
            target.port,
            target.logical_device,
            target.credentials,
            identity,
            timeout,
            cache_key=target.mrid,
        )

    return factory


class ReadingEngine:
    def __init__(
        self,
        sink: ReadingSink,
        *,
        policy: EnginePolicy | None = None,
        sessions: SessionFactory | None = None,
        identity: ClientIdentity | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.sink = sink
        self.policy = policy or EnginePolicy()
        self.identity = identity or ClientIdentity()
        self.sessions = sessions or tcp_sessions(self.identity)
        self._sleep = sleep

    # --- one meter ---
    def _chunks(self, runs: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
        out = []
        step = self.policy.profile_chunk
        for lo, hi in runs:
            while lo <= hi:
                top = min(hi, lo + step - INTERVAL)
                out.append((lo, top))
                lo = top + INTERVAL
        return out

    def read_meter(self, target: MeterTarget, command: ReadCommand) -> MeterResult:
        result = MeterResult(target.mrid)
        # one capture before the window so the first interval's delta can be computed
        window_start = command.start - INTERVAL
        rows: dict[datetime, ProfileRow] = {}
        columns: tuple[str, ...] = ()
        registers_done = False
        register_out: list[Reading] = []
        for attempt in range(1, self.policy.attempts + 1):
            result.go(MeterOutcome.READING)
            result.attempts = attempt
            try:
                session = self.sessions(target, self.policy.timeout)
                try:
                    session.associate()
                    if not registers_done:
                        clock = session.read_clock()
                        now = datetime.now(UTC)
                        result.clock_offset = clock - now
                        quality = (
                            ""
                            if abs(result.clock_offset) <= self.policy.clock_tolerance
                            else QUALITY_TIME_QUESTIONABLE
                        )
                        values = session.read_registers(command.registers)
                        register_out = register_readings(
                            values, now.replace(microsecond=0), quality
                        )
                        registers_done = True
                    # first pass: what is missing (all of it on the first attempt, in
                    # chunks); second pass: a targeted re-read of the runs still missing
                    for pass_ in range(2):
                        gaps = missing_intervals(window_start - INTERVAL, command.end, rows)
                        if not gaps:
                            break
                        if pass_:
                            result.rereads += 1
                        for lo, hi in self._chunks(contiguous_ranges(gaps)):
                            profile = session.read_profile(lo, hi)
                            columns = profile.columns
                            rows.update({r.ts: r for r in profile.rows})
                    if command.read_events:
                        result.events = [
                            e
                            for e in session.read_event_log()
                            if not command.events_in_window or command.start < e.ts <= command.end
                        ]
                    session.release()
                finally:
                    session.close()
                result.error = None
                break
            except RecoverableError as exc:
                result.error = str(exc)
                if attempt < self.policy.attempts:
                    result.go(MeterOutcome.WAITING)
                    self._sleep(self.policy.backoff.delay(attempt))
            except AmihubError as exc:  # security violation, refused association, protocol
                result.error = f"{type(exc).__name__}: {exc}"
                result.failed_at = datetime.now(UTC)
                break
            except Exception as exc:  # a defect met on this meter's answer: this meter only
                log.exception("meter %s: unexpected error while reading it", target.mrid)
                result.error = f"internal error ({type(exc).__name__}): {exc}"[:500]
                result.failed_at = datetime.now(UTC)
                break
        intervals = [
            r
            for r in (
                profile_readings(columns, rows.values(), command.profile_channels)
                if columns
                else []
            )
            if command.start < r.ts <= command.end
        ]
        result.readings = register_out + intervals
        result.missing = missing_intervals(command.start, command.end, {r.ts for r in intervals})
        if result.error is None and not result.missing:
            result.go(MeterOutcome.DONE)
        elif result.readings:
            result.go(MeterOutcome.PARTIAL)
        else:
            result.go(MeterOutcome.FAILED)
        return result

    # --- a run ---
    def run(self, command: ReadCommand) -> RunReport:
        started = time.perf_counter()
        results: list[MeterResult] = []
        batch: list[MeterResult] = []
        stats = IngestStats()
        events = 0
        with ThreadPoolExecutor(
            max_workers=self.policy.concurrency, thread_name_prefix="hes-read"
        ) as pool:
            futures = {pool.submit(self.read_meter, t, command): t for t in command.targets}
            for future in as_completed(futures):
                try:
                    result = future.result()
                except Exception as exc:  # read_meter keeps its errors: a defect, this meter
                    log.exception("meter %s: unexpected error", futures[future].mrid)
                    result = MeterResult(
                        futures[future].mrid,
                        MeterOutcome.FAILED,
                        error=f"internal error ({type(exc).__name__}): {exc}"[:500],
                        failed_at=datetime.now(UTC),
                    )
                results.append(result)
                batch.append(result)
                if len(batch) >= self.policy.batch_meters:
                    s, e = self.sink.write(batch)
                    stats, events, batch = stats + s, events + e, []
        if batch:
            s, e = self.sink.write(batch)
            stats, events = stats + s, events + e
        return RunReport(tuple(results), stats, events, time.perf_counter() - started)
