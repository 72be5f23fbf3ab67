"""Where a head-end job runs: the one dispatch port and its in-process adapter.

:class:`JobDispatch` is what the application hands head-end work to: the scheduler's
claimed jobs (:mod:`hub.headend_scheduler`) and the on-demand reads of
``create MeterReadSchedule`` (:mod:`hub.nouns.meter_read_schedule`). Two adapters,
chosen by the composition root (hub/bootstrap.py) from ``[hes] dispatch``:

* :class:`InProcessJobs` (``"inprocess"``, here): a control job through
  :class:`hes.controls.ControlJobs` (the head-end's ``execute``), a read through
  :class:`hes.engine.ReadingEngine`, its results stored by
  :class:`hub.headend_store.MdmReadingSink` (``StoreMeterReadings`` on the bus, one
  transaction per batch of meters);
* ``adapters.dlms.dispatch.AmqpJobs`` (``"amqp"``): the job is published on ``[hes]
  jobs_queue`` for ``amihub engine`` processes, which store the readings (the same
  sink) and record a control job's outcome themselves, and the call waits for the
  replies (``[hes] job_timeout``).

Either way a read's results are committed when :meth:`JobDispatch.read` returns, and
no caller's transaction is open while the meters are talked to.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from hes.controls import EVENTS
from hes.engine import EnginePolicy, MeterTarget, ReadCommand, ReadingEngine, SessionFactory
from hub.bus import MessageBus
from hub.headend import ControlReport, ControlRequest, DeviceResult, MeterRead
from hub.headend_store import MdmReadingSink, ResultPublisher
from hub.metrics import METER_READS
from mdm.model import IngestStats
from mdm.ports import UnitOfWorkFactory

SWITCH_FAILED = "3.31.0.85"
NO_ADDRESS = "no head-end address"


@dataclass(frozen=True)
class ReadRun:
    """One read: the meters, the window (start, end], the types kept."""

    job_id: str
    devices: tuple[str, ...]
    start: datetime
    end: datetime
    utility_code: str
    types: frozenset[str] | None = None
    #: read the meters' event logs (the window's events stored)
    events: bool = True
    #: the MessageID of the request the read answers (its events and readings are
    #: published with it); None for a scheduled run
    correlation_id: str | None = None


@dataclass(frozen=True)
class ReadOutcome:
    meters: int
    failed: tuple[str, ...]  # meters that answered nothing
    readings: int
    stored: int
    superseded: int
    unchanged: int
    events: int
    #: each meter's outcome and error (readings and events are in the store)
    reads: tuple[MeterRead, ...] = field(default=(), compare=False)

    def describe(self) -> str:
        failed = f" failed={','.join(self.failed)}" if self.failed else ""
        return (
            f"meters={self.meters} readings={self.readings} stored={self.stored} "
            f"superseded={self.superseded} unchanged={self.unchanged} events={self.events}" + failed
        )


@dataclass(frozen=True)
class ControlRun:
    """A control job's report; ``recorded``: its outcome is already in the store (the
    engine recorded it), so the scheduler must not record it again."""

    report: ControlReport
    recorded: bool = False


class JobDispatch(Protocol):
    """Runs head-end jobs: in this process or in ``amihub engine`` processes."""

    def control(self, request: ControlRequest) -> ControlRun: ...

    def read(self, run: ReadRun) -> ReadOutcome:
        """Read the meters and store what they gave; returns once it is committed."""
        ...


class MeterAddresses(Protocol):
    """How meters are reached (:class:`adapters.dlms.MeterDirectory`)."""

    def __contains__(self, mrid: object) -> bool: ...

    def __getitem__(self, mrid: str) -> MeterTarget: ...


def failure_event(control_type: str) -> str:
    """The EndDeviceEventType reported for a device the job could not operate."""
    return EVENTS.get(control_type, ("", SWITCH_FAILED))[1]


def failed_report(request: ControlRequest, detail: str, at: datetime) -> ControlReport:
    event = failure_event(request.control_type)
    return ControlReport(
        request,
        "failed",
        tuple(DeviceResult(d, False, event, detail, at) for d in request.devices),
    )


class _Collect:
    """ReadingSink that stores nothing: :meth:`InProcessJobs.read` filters, then stores."""

    def write(self, results: Sequence[object]) -> tuple[IngestStats, int]:
        return IngestStats(), 0


class InProcessJobs:
    """:class:`JobDispatch` in this process. ``execute`` runs a control job
    (:meth:`adapters.dlms.DlmsHeadEnd.execute`); reads go through ``sessions`` (one
    association at a time per meter) and are stored through the bus."""

    def __init__(
        self,
        execute: Callable[[ControlRequest], ControlReport],
        directory: MeterAddresses,
        sessions: SessionFactory,
        policy: EnginePolicy,
        uow_factory: UnitOfWorkFactory,
        publisher: ResultPublisher | None = None,
        *,
        bus: MessageBus | None = None,
    ) -> None:
        self.execute = execute
        self.directory = directory
        self.sessions = sessions
        self.policy = policy
        self.uow_factory = uow_factory
        #: new meter events and the readings of a run, published in its transaction
        self.publisher = publisher
        self.bus = bus

    def control(self, request: ControlRequest) -> ControlRun:
        return ControlRun(self.execute(request))

    def read(self, run: ReadRun) -> ReadOutcome:
        known = [d for d in run.devices if d in self.directory]
        engine = ReadingEngine(_Collect(), policy=self.policy, sessions=self.sessions)
        report = engine.run(
            ReadCommand(
                tuple(self.directory[d] for d in known), run.start, run.end, read_events=run.events
            )
        )
        results = list(report.results)
        readings = 0
        for r in results:
            METER_READS.labels(r.outcome.value).inc()
            if run.types is not None:
                r.readings = [x for x in r.readings if x.reading_type in run.types]
            r.events = [e for e in r.events if run.start < e.ts <= run.end]
            readings += len(r.readings)
        sink = MdmReadingSink(
            self.uow_factory,
            run.utility_code,
            self.publisher,
            bus=self.bus,
            correlation_id=run.correlation_id,
        )
        stats, events = sink.write(results)
        reads = tuple(
            MeterRead(r.mrid, r.outcome.value, (), (), len(r.missing), r.error) for r in results
        ) + tuple(
            MeterRead(d, "failed", (), (), 0, NO_ADDRESS)
            for d in run.devices
            if d not in self.directory
        )
        return ReadOutcome(
            len(run.devices),
            tuple(r.device_mrid for r in reads if r.outcome == "failed"),
            readings,
            stats.stored,
            stats.superseded,
            stats.unchanged,
            events,
            reads,
        )
