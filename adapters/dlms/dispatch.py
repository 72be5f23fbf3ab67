"""``[hes] dispatch = "amqp"``: on-demand reads (MeterReadSchedule) run by ``amihub engine``.

:class:`AmqpEngineReads` implements :class:`hub.nouns.meter_read_schedule.EngineReads`:
the meters are split into jobs of ``[hes] job_meters``, published on ``[hes]
jobs_queue`` with an exclusive reply queue of the call, and the call returns once
every job replied (its readings committed by the engine that ran it). A job with no
reply within ``[hes] job_timeout`` raises :class:`cim_schemas.errors.TransportUnavailable`
(the request is retried or answered as the adapter does for a broker outage).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from kombu.exceptions import OperationalError

from adapters.dlms.jobs import JobDispatcher
from cim_schemas.errors import TransportUnavailable
from hub.headend import MeterRead
from hub.nouns.meter_read_schedule import StoredReads
from hub.settings import AmqpSettings, HesSettings


class AmqpEngineReads:
    def __init__(self, hes: HesSettings, amqp: AmqpSettings) -> None:
        self.hes = hes
        self.amqp = amqp

    def read_stored(
        self,
        devices: Sequence[str],
        start: datetime,
        end: datetime,
        *,
        utility_code: str,
        types: frozenset[str] | None,
        events: bool = True,
    ) -> StoredReads:
        # connections of this call only: a route holds no broker connection between requests
        dispatcher = JobDispatcher(self.hes, self.amqp, name="hes-reads")
        try:
            replies = dispatcher.read(
                devices, start, end, events=events, utility=utility_code, types=types
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
        return StoredReads(reads, readings, **totals)
