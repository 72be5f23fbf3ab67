"""The head-end port: how the hub reaches meters, and where control jobs are recorded.

The hub never speaks DLMS. Routes (``hub/nouns/end_device_controls.py``,
``meter_read_schedule.py``) talk to a :class:`HeadEnd`; ``adapters/dlms``
implements it with ``hes.*`` (simulated meters over real TCP in tests and the
demo). docs/controls.md tells the whole story.

Control jobs live in the head-end job table (``uow.hes_jobs``, mdm/hes_jobs.py),
written in the transaction of the request: the table is the source of truth for
scheduling. Their CIM-visible history is EndDeviceEvents:

* the request, one event per device, type = the EndDeviceControlType code,
  details ``job``, ``state=scheduled``, ``control``, ``start``, ``message``: written
  in the transaction of the request, with the job row;
* a cancel: the same with ``state=cancelled``;
* the outcome, one event per device with the CIM result code (3.31.0.68
  disconnected, 3.31.0.42 connected, 3.31.0.85 switch operation failed, 3.36.0.24
  clock changed), details ``job``, ``state`` (the job's final state), ``ok``,
  ``detail``; stored and published as ``created EndDeviceEvents`` through the
  outbox in one transaction, with the job row's final state.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar, Final, Protocol

from lxml import etree

from cim_schemas.codes.event_type import EndDeviceControlType
from cim_schemas.errors import AmihubError
from cim_schemas.meter_readings import Row, render_readings, value_text
from cim_schemas.profiles.common import IdentifiedObject
from cim_schemas.profiles.end_device_events import EndDeviceEvent as CimEvent
from cim_schemas.profiles.end_device_events import EndDeviceEvents, render_end_device_events
from hub.control_parameters import (
    ControlParameterInvalid,
    ControlParameters,
    parameters_from_dict,
    parameters_to_dict,
)
from hub.forwarding import EventForwarder
from hub.metrics import CONTROL_JOBS
from hub.readings_codec import STORED_QUALITIES
from hub.settings import Settings
from mdm.hes_jobs import JobKind
from mdm.model import EndDeviceEvent
from mdm.ports import UnitOfWork, UnitOfWorkFactory

log = logging.getLogger("amihub.headend")

SCHEDULED: Final = "scheduled"
CANCELLED: Final = "cancelled"
#: a job's final states (hes.controls.JobState values)
FINISHED: Final = frozenset({"succeeded", "partial", "failed", CANCELLED})
#: namespace of the mRIDs of job records (stable: job, device, state)
_EVENT_IDS: Final = uuid.UUID("6f1d7c1e-2a8b-4c35-9a57-0e4d3b8f21c9")
#: outbox: the AMQP events exchange key and the SOAP subscriber service of our events
AMQP_DESTINATION: Final = "created.EndDeviceEvents"
SOAP_SERVICE: Final = "SendEndDeviceEvents"
#: the same for the readings the head-end reads
READINGS_AMQP_DESTINATION: Final = "created.MeterReadings"
READINGS_SOAP_SERVICE: Final = "SendMeterReadings"
#: bounds of one EventMessage: events, and readings (a meter is never split)
MAX_EVENTS_PER_MESSAGE: Final = 1_000
MAX_READINGS_PER_MESSAGE: Final = 10_000


class UnknownJob(AmihubError):
    """No such control job (or it cannot run here: unknown type, meter without address)."""


class JobNotCancellable(AmihubError):
    """The job is running or finished: only a scheduled job can be cancelled."""


@dataclass(frozen=True)
class ControlRequest:
    """One EndDeviceControl as a job for the head-end."""

    job_id: str  # the EndDeviceControl mRID, or one amihub made up
    utility_id: int
    control_type: str  # EndDeviceControlType code
    devices: tuple[str, ...]  # MDM mRIDs
    requested_at: datetime
    start: datetime | None = None  # None: as soon as possible
    reason: str | None = None
    correlation_id: str | None = None  # MessageID of the request
    #: the threshold / calendar / image reference of 3.15.0.18, 3.20.0.24, 3.11.0.24
    #: (hub.control_parameters); None for the types that take none
    parameters: ControlParameters | None = None

    def to_json(self) -> dict[str, Any]:
        """The one JSON form of a request (engine jobs, the head-end job table)."""
        return {
            "job": self.job_id,
            "utility_id": self.utility_id,
            "control_type": self.control_type,
            "devices": list(self.devices),
            "requested_at": self.requested_at.isoformat(),
            "start": self.start.isoformat() if self.start is not None else None,
            "reason": self.reason,
            "correlation_id": self.correlation_id,
            "parameters": parameters_to_dict(self.parameters),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ControlRequest:
        """Inverse of :meth:`to_json`; raises KeyError / ValueError / TypeError on bad data."""
        start = data.get("start")
        try:
            parameters = parameters_from_dict(data.get("parameters"))
        except ControlParameterInvalid as exc:
            raise ValueError(f"control request {data.get('job')!r}: {exc}") from None
        return cls(
            job_id=str(data["job"]),
            utility_id=int(data["utility_id"]),
            control_type=str(data["control_type"]),
            devices=tuple(str(d) for d in data["devices"]),
            requested_at=datetime.fromisoformat(data["requested_at"]),
            start=datetime.fromisoformat(start) if start else None,
            reason=data.get("reason"),
            correlation_id=data.get("correlation_id"),
            parameters=parameters,
        )


@dataclass(frozen=True)
class DeviceResult:
    device_mrid: str
    ok: bool
    event_type: str  # EndDeviceEventType code
    detail: str
    at: datetime


@dataclass(frozen=True)
class ControlReport:
    request: ControlRequest
    state: str  # succeeded | partial | failed
    results: tuple[DeviceResult, ...]
    #: security events of the job (association refused, bad tag, stale counter), stored
    #: and published with the outcome events (the head-end classifies its failures)
    security_events: tuple[EndDeviceEvent, ...] = ()


@dataclass(frozen=True)
class MeterRead:
    """What an on-demand read got from one meter (nothing stored yet)."""

    device_mrid: str
    outcome: str  # done | partial | failed
    readings: tuple[tuple[str, datetime, Decimal, str], ...]  # (ReadingType, ts, value, quality)
    #: the meter's events (stable mRIDs, hes.meter_events) and the security events of
    #: the read (association refused, bad tag, stale counter)
    events: tuple[EndDeviceEvent, ...]
    missing: int = 0  # intervals still missing after the re-reads
    error: str | None = None


class HeadEnd(Protocol):
    """What the hub's routes need from a head-end."""

    #: the EndDeviceControlType codes it can execute
    control_types: frozenset[str]

    def addressable(self, device_mrid: str) -> bool:
        """The head-end knows how to reach this meter (address and keys)."""
        ...

    def submit(self, uow: UnitOfWork, request: ControlRequest) -> None:
        """Write the job in the caller's (the request's) transaction; it runs once that
        committed and its start is due. A taken job id: PayloadInvalid 2007."""
        ...

    def cancel(self, uow: UnitOfWork, utility_id: int, job_id: str) -> ControlRequest:
        """Cancel a scheduled job in the caller's transaction; raises UnknownJob or
        JobNotCancellable."""
        ...

    def run_due(self) -> list[ControlReport]:
        """One scheduler tick: start the due jobs, run them, record their outcomes."""
        ...

    def read(
        self, devices: Sequence[str], start: datetime, end: datetime, *, events: bool = False
    ) -> list[MeterRead]:
        """Read registers and the load profile of (start, end] now (network only)."""
        ...

    def close(self) -> None: ...


# -- publishing events -----------------------------------------------------------------------


def cim_event(event: EndDeviceEvent) -> CimEvent:
    return CimEvent(
        end_device_event_type=event.event_type,
        mrid=event.mrid,
        created_date_time=event.created_at,
        reason=event.reason,
        severity=event.severity,
        assets=IdentifiedObject(event.device_mrid),
        details=tuple(sorted(event.details.items())),
    )


class _CreatedPublisher:
    """``created <noun>`` EventMessages of the head-end's own, through the one event
    writer (:class:`hub.forwarding.EventForwarder`): the AMQP events exchange (``[amqp]
    enabled``: key ``created.<noun>``) and the SOAP subscribers of the noun (``[soap]
    subscribers.<noun>``: Send<noun>), in the caller's transaction."""

    noun: ClassVar[str]
    amqp_destination: ClassVar[str]
    soap_service: ClassVar[str]

    def __init__(self, settings: Settings) -> None:
        self.forwarder = EventForwarder.from_settings(settings)

    @property
    def enabled(self) -> bool:
        return self.forwarder.raises(self.noun)

    def _enqueue(
        self,
        uow: UnitOfWork,
        payload: Callable[[], etree._Element],
        correlation_id: str | None,
    ) -> int:
        return self.forwarder.raise_created(
            uow,
            self.noun,
            payload,
            amqp_destination=self.amqp_destination,
            soap_service=self.soap_service,
            correlation_id=correlation_id,
        )


class EventPublisher(_CreatedPublisher):
    """``created EndDeviceEvents``: meter and security events."""

    noun = "EndDeviceEvents"
    amqp_destination = AMQP_DESTINATION
    soap_service = SOAP_SERVICE

    def __init__(self, settings: Settings, max_events: int = MAX_EVENTS_PER_MESSAGE) -> None:
        super().__init__(settings)
        self.max_events = max_events

    def publish(
        self, uow: UnitOfWork, events: Sequence[EndDeviceEvent], correlation_id: str | None
    ) -> int:
        """Enqueue event messages of at most ``max_events`` events each (one message for
        a job or a read batch of usual size); returns the outbox items written."""
        if not events or not self.enabled:
            return 0
        written = 0
        for start in range(0, len(events), self.max_events):
            chunk = EndDeviceEvents(tuple(map(cim_event, events[start : start + self.max_events])))
            written += self._enqueue(
                uow, functools.partial(render_end_device_events, chunk), correlation_id
            )
        return written

    def record(
        self,
        uow: UnitOfWork,
        utility_id: int,
        events: Sequence[EndDeviceEvent],
        correlation_id: str | None = None,
    ) -> list[EndDeviceEvent]:
        """Store the events not stored yet (by mRID) and publish those, in the caller's
        transaction: a rollback stores and publishes nothing, and a re-read publishes
        nothing twice. Returns the new events."""
        new = uow.events.add_new(utility_id, events)
        self.publish(uow, new, correlation_id)
        return new


#: what the head-end read from one meter: (mRID, [(ReadingType, ts, value, quality)])
MeterValues = tuple[str, Sequence[tuple[str, datetime, Decimal, str]]]


def reply_rows(device_mrid: str, rows: Sequence[tuple[str, datetime, Decimal, str]]) -> list[Row]:
    """What the head-end read from one meter as the codec's rows: by ReadingType and
    time, each reading's quality text as stored (its codes and what came with them)."""
    ordered = sorted(rows, key=lambda r: (r[0], r[1]))
    return [(device_mrid, rt, ts.isoformat(), value_text(value), q) for rt, ts, value, q in ordered]


class ReadingPublisher(_CreatedPublisher):
    """``created MeterReadings`` for what the head-end read. One EventMessage per read
    batch, split between meters so that no message holds more than ``max_readings``
    readings (a meter with more goes alone)."""

    noun = "MeterReadings"
    amqp_destination = READINGS_AMQP_DESTINATION
    soap_service = READINGS_SOAP_SERVICE

    def __init__(self, settings: Settings, max_readings: int = MAX_READINGS_PER_MESSAGE) -> None:
        super().__init__(settings)
        self.max_readings = max_readings

    def publish(
        self, uow: UnitOfWork, meters: Sequence[MeterValues], correlation_id: str | None = None
    ) -> int:
        """Enqueue the messages in the caller's transaction; returns the outbox items."""
        if not self.enabled:
            return 0
        written = 0
        batch: list[MeterValues] = []
        size = 0
        for device, rows in meters:
            if not rows:
                continue
            if batch and size + len(rows) > self.max_readings:
                written += self._message(uow, batch, correlation_id)
                batch, size = [], 0
            batch.append((device, rows))
            size += len(rows)
        if batch:
            written += self._message(uow, batch, correlation_id)
        return written

    def _message(
        self, uow: UnitOfWork, batch: Sequence[MeterValues], correlation_id: str | None
    ) -> int:
        return self._enqueue(
            uow,
            lambda: render_readings(
                (row for d, rows in batch for row in reply_rows(d, rows)), STORED_QUALITIES
            )[0],
            correlation_id,
        )


class HeadEndOutbox:
    """What reads and pushes publish, in the transaction that stores it: meter and
    security events (:class:`EventPublisher`: stored once by mRID, only new ones
    published) and the readings read (:class:`ReadingPublisher`)."""

    def __init__(self, settings: Settings) -> None:
        self.events = EventPublisher(settings)
        self.readings = ReadingPublisher(settings)

    def record_events(
        self,
        uow: UnitOfWork,
        utility_id: int,
        events: Sequence[EndDeviceEvent],
        correlation_id: str | None = None,
    ) -> list[EndDeviceEvent]:
        return self.events.record(uow, utility_id, events, correlation_id)

    def publish_readings(
        self, uow: UnitOfWork, meters: Sequence[MeterValues], correlation_id: str | None = None
    ) -> int:
        return self.readings.publish(uow, meters, correlation_id)


# -- the job records ---------------------------------------------------------------------------


def _describe(code: str) -> str:
    try:
        return EndDeviceControlType.parse(code).describe()
    except ValueError:
        return code


def _event_id(job_id: str, device: str, state: str) -> str:
    return str(uuid.uuid5(_EVENT_IDS, f"{job_id}\n{device}\n{state}"))


class ControlJournal:
    """Control jobs recorded as EndDeviceEvents (see the module docstring)."""

    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        publisher: EventPublisher,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.uow_factory = uow_factory
        self.publisher = publisher
        self.clock = clock

    @staticmethod
    def request_events(request: ControlRequest, state: str, at: datetime) -> list[EndDeviceEvent]:
        details = {
            "job": request.job_id,
            "state": state,
            "control": request.control_type,
            "start": request.start.isoformat() if request.start else "",
            "message": request.correlation_id or "",
        }
        return [
            EndDeviceEvent(
                device_mrid=device,
                event_type=request.control_type,
                created_at=at,
                reason=request.reason or f"{_describe(request.control_type)}: job {state}",
                mrid=_event_id(request.job_id, device, state),
                details=details,
            )
            for device in request.devices
        ]

    def record_request(self, uow: UnitOfWork, request: ControlRequest) -> None:
        """In the caller's transaction (the request's)."""
        uow.events.add_many(
            request.utility_id, self.request_events(request, SCHEDULED, request.requested_at)
        )

    def record_cancel(self, uow: UnitOfWork, request: ControlRequest, at: datetime) -> None:
        events = self.request_events(request, CANCELLED, at)
        uow.events.add_many(request.utility_id, events)
        self.publisher.publish(uow, events, request.correlation_id)

    def record_report(
        self, report: ControlReport, *, owner: str | None = None
    ) -> list[EndDeviceEvent]:
        """Outcome events stored and published, and the job's row in the job table (if
        it has one) set to the final state, in one transaction of their own. With
        ``owner`` (the scheduler that claimed the job) nothing is written unless it still
        holds the job's lease: another scheduler took the job over and reports it."""
        request = report.request
        with self.uow_factory() as uow:
            job = uow.hes_jobs.get(request.utility_id, JobKind.CONTROL, request.job_id)
            if job is not None and job.id is not None:
                outcome = ", ".join(
                    f"{r.device_mrid}: {r.event_type}{' ' + r.detail if r.detail else ''}"
                    for r in report.results
                )
                finished = uow.hes_jobs.finish(
                    job.id, report.state, self.clock(), owner=owner, outcome=outcome
                )
                if not finished and owner is not None:
                    log.warning(
                        "control job %s: lease lost, its outcome is not recorded here",
                        request.job_id,
                    )
                    return []
            events = self.write_report(uow, report)
            uow.commit()
        CONTROL_JOBS.labels(request.control_type, report.state).inc()
        log.info(
            "control job %s (%s, %d device(s)): %s",
            request.job_id,
            request.control_type,
            len(request.devices),
            report.state,
        )
        return events

    def write_report(self, uow: UnitOfWork, report: ControlReport) -> list[EndDeviceEvent]:
        """The outcome events, stored and published in the caller's transaction."""
        request = report.request
        events = [
            EndDeviceEvent(
                device_mrid=r.device_mrid,
                event_type=r.event_type,
                created_at=r.at,
                reason=f"{_describe(request.control_type)}: job {report.state}",
                mrid=_event_id(request.job_id, r.device_mrid, report.state),
                details={
                    "job": request.job_id,
                    "state": report.state,
                    "control": request.control_type,
                    "ok": "true" if r.ok else "false",
                    "detail": r.detail,
                    "message": request.correlation_id or "",
                },
            )
            for r in report.results
        ]
        events += [
            replace(e, details={**e.details, "job": request.job_id}) for e in report.security_events
        ]
        uow.events.add_many(request.utility_id, events)
        self.publisher.publish(uow, events, request.correlation_id)
        return events
