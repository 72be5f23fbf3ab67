"""``[hes] dispatch = "amqp"``: head-end jobs run by ``amihub engine`` processes.

:class:`AmqpJobs` is the RabbitMQ adapter of :class:`hub.headend_jobs.JobDispatch`
(the in-process one is :class:`hub.headend_jobs.InProcessJobs`). A read is split into
jobs of ``[hes] job_meters`` meters, published on ``[hes] jobs_queue`` with an
exclusive reply queue of the call; the call returns once every job replied (its
readings committed by the engine that ran it). A control job goes the same way, and
the engine records its outcome (``ControlJournal.record_report``: events, outbox and
the job row, one transaction). A job with no reply within ``[hes] job_timeout``
raises :class:`cim_schemas.errors.TransportUnavailable` (a request is retried or
answered as its adapter does for a broker outage; the scheduler puts the job back).
The connections are the call's own: nothing is held between calls.
"""

# mypy: disable-error-code="no-untyped-call"
from __future__ import annotations

import uuid
from datetime import UTC, datetime

from kombu.entity import Queue
from kombu.exceptions import OperationalError

from adapters.amqp.connection import make_connection
from adapters.dlms.jobs import JobDispatcher, collect, control_job
from cim_schemas.errors import TransportUnavailable
from hub.headend import ControlReport, ControlRequest, DeviceResult, MeterRead
from hub.headend_jobs import ControlRun, ReadOutcome, ReadRun, failure_event
from hub.settings import AmqpSettings, HesSettings


class AmqpJobs:
    def __init__(self, hes: HesSettings, amqp: AmqpSettings) -> None:
        self.hes = hes
        self.amqp = amqp

    def control(self, request: ControlRequest) -> ControlRun:
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
        dispatcher = JobDispatcher(self.hes, self.amqp, name="hes-reads")
        try:
            replies = dispatcher.read(
                run.devices,
                run.start,
                run.end,
                events=run.events,
                utility=run.utility_code,
                types=run.types,
            )
        except (TimeoutError, OSError, OperationalError) as exc:
            raise TransportUnavailable(f"head-end engines: {exc}") from exc
        finally:
            dispatcher.close()
        reads: list[MeterRead] = []
        readings = 0
        totals = {"stored": 0, "superseded": 0, "unchanged": 0, "events": 0}
        for reply in replies:
            for key in totals:
                totals[key] += int(reply["stats"].get(key, 0))
            for meter in reply["meters"]:
                readings += int(meter.get("readings") or 0)
                reads.append(
                    MeterRead(
                        device_mrid=meter["mrid"],
                        outcome=meter["outcome"],
                        readings=(),
                        events=(),
                        missing=int(meter.get("missing") or 0),
                        error=meter.get("error"),
                    )
                )
        return ReadOutcome(
            len(reads),
            tuple(r.device_mrid for r in reads if r.outcome == "failed"),
            readings,
            totals["stored"],
            totals["superseded"],
            totals["unchanged"],
            totals["events"],
            tuple(reads),
        )
