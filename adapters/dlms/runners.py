# mypy: disable-error-code="no-untyped-call"
"""Where a claimed head-end job runs: in this process, or in ``amihub engine`` processes.

:class:`JobRunner` is the small interface the scheduler (:mod:`adapters.dlms.scheduler`)
talks to:

* :class:`InProcessRunner` (``[hes] dispatch = "inprocess"``): a control job through
  :class:`hes.controls.ControlJobs`, a read through :class:`hes.engine.ReadingEngine`
  whose results go to the MDM through :class:`hes.engine.MdmReadingSink`;
* :class:`AmqpRunner` (``[hes] dispatch = "amqp"``): the job is published on ``[hes]
  jobs_queue`` (adapters/dlms/jobs.py) with a reply queue of the call, and the call
  waits up to ``[hes] job_timeout`` for the replies. The engine stores the readings, and
  records a control job's outcome itself (``ControlJournal.record_report``: events,
  outbox and the job row, one transaction).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from adapters.dlms.directory import MeterDirectory
from cim_schemas.errors import TransportUnavailable
from hes.controls import EVENTS
from hes.engine import (
    EnginePolicy,
    MeterResult,
    ReadCommand,
    ReadingEngine,
    SessionFactory,
)
from hub.headend import ControlReport, ControlRequest, DeviceResult
from hub.headend_store import MdmReadingSink, ResultPublisher
from hub.settings import AmqpSettings, HesSettings
from mdm.model import IngestStats
from mdm.ports import UnitOfWorkFactory

SWITCH_FAILED = "3.31.0.85"


@dataclass(frozen=True)
class ReadRun:
    """One run of a read schedule: the meters, the window (start, end], the types kept."""

    job_id: str
    devices: tuple[str, ...]
    start: datetime
    end: datetime
    utility_code: str
    types: frozenset[str] | None = None
    #: read the meters' event logs (the window's events stored)
    events: bool = True


@dataclass(frozen=True)
class ReadOutcome:
    meters: int
    failed: tuple[str, ...]  # meters that answered nothing
    readings: int
    stored: int
    superseded: int
    unchanged: int
    events: int

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


class JobRunner(Protocol):
    def control(self, request: ControlRequest) -> ControlRun: ...
    def read(self, run: ReadRun) -> ReadOutcome: ...


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


class InProcessRunner:
    """``execute`` runs a control job here (:meth:`adapters.dlms.DlmsHeadEnd.execute`)."""

    def __init__(
        self,
        execute: Callable[[ControlRequest], ControlReport],
        directory: MeterDirectory,
        sessions: SessionFactory,
        policy: EnginePolicy,
        uow_factory: UnitOfWorkFactory,
        publisher: ResultPublisher | None = None,
    ) -> None:
        self.execute = execute
        self.directory = directory
        self.sessions = sessions
        self.policy = policy
        self.uow_factory = uow_factory
        #: new meter events and the readings of a run, published in its transaction
        self.publisher = publisher

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
            if run.types is not None:
                r.readings = [x for x in r.readings if x.reading_type in run.types]
            r.events = [e for e in r.events if run.start < e.ts <= run.end]
            readings += len(r.readings)
        sink = MdmReadingSink(self.uow_factory, run.utility_code, self.publisher)
        stats, events = sink.write(results)
        failed = tuple(r.mrid for r in results if r.outcome.value == "failed") + tuple(
            d for d in run.devices if d not in self.directory
        )
        return ReadOutcome(
            len(run.devices),
            failed,
            readings,
            stats.stored,
            stats.superseded,
            stats.unchanged,
            events,
        )


class _Collect:
    """ReadingSink that stores nothing: :meth:`InProcessRunner.read` filters, then stores."""

    def write(self, results: Sequence[MeterResult]) -> tuple[IngestStats, int]:
        return IngestStats(), 0


class AmqpRunner:
    def __init__(self, hes: HesSettings, amqp: AmqpSettings) -> None:
        self.hes = hes
        self.amqp = amqp

    def control(self, request: ControlRequest) -> ControlRun:
        from kombu.entity import Queue
        from kombu.exceptions import OperationalError

        from adapters.amqp.connection import make_connection
        from adapters.dlms.jobs import JobDispatcher, collect, control_job

        dispatcher = JobDispatcher(self.hes, self.amqp, name="hes-scheduler")
        try:
            with make_connection(self.amqp, "hes-scheduler-replies") as connection:
                channel = connection.channel()
                reply = Queue(
                    f"amihub.hes.reply.{uuid.uuid4().hex}", exclusive=True, auto_delete=True
                )
                reply(channel).declare()
                [job] = dispatcher.publish([control_job(request)], reply.name)
                [body] = collect(connection, reply.name, [job], self.hes.job_timeout)
        except (TimeoutError, OSError, OperationalError) as exc:
            raise TransportUnavailable(f"head-end engines: {exc}") from exc
        finally:
            dispatcher.close()
        results = tuple(
            DeviceResult(
                str(m["mrid"]),
                m.get("outcome") == "done",
                failure_event(request.control_type),
                str(m.get("error") or ""),
                datetime.now(UTC),
            )
            for m in body.get("meters") or []
        )
        return ControlRun(ControlReport(request, str(body.get("state")), results), recorded=True)

    def read(self, run: ReadRun) -> ReadOutcome:
        from adapters.dlms.dispatch import AmqpEngineReads

        done = AmqpEngineReads(self.hes, self.amqp).read_stored(
            run.devices,
            run.start,
            run.end,
            utility_code=run.utility_code,
            types=run.types,
            events=run.events,
        )
        return ReadOutcome(
            len(done.reads),
            tuple(r.device_mrid for r in done.reads if r.outcome == "failed"),
            done.readings,
            done.stored,
            done.superseded,
            done.unchanged,
            done.events,
        )
