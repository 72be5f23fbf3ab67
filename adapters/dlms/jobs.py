# mypy: disable-error-code="no-untyped-call"
"""Head-end jobs on RabbitMQ: the message format, the queue, and the submitter.

One durable queue, ``[hes] jobs_queue`` (default ``amihub.hes.jobs``; a quorum
queue with ``[amqp] quorum = true``), published to through the default exchange.
A message is one job, JSON (``content_type = application/json``):

* read: ``{"kind": "read", "job": id, "meters": [mRID...], "start": iso, "end": iso,
  "registers": [OBIS...] | null, "events": bool, "utility": code}`` (registers null:
  the engine's defaults; ``[]``: the load profile only); optional ``"types":
  [ReadingType...]`` (store only these), ``"events_in_window": true`` (store only the
  meter events of (start, end]) and ``"profile_channels": [OBIS...]`` (the profile
  columns to store; absent: all);
* control: ``{"kind": "control", **ControlRequest.to_json()}``: ``"job": id,
  "utility_id": n, "control_type": code, "devices": [mRID...], "requested_at": iso,
  "start": iso | null, "reason": str | null, "correlation_id": str | null,
  "parameters": {...} | null`` (the one codec of a :class:`hub.headend.ControlRequest`
  is in hub/headend.py; ``parameters`` in hub/control_parameters.py: a load limit
  threshold, a whole ToU calendar, or a firmware image reference, never its bytes).

Completion comes back on a reply queue: the job's ``reply_to`` (AMQP property)
receives one JSON reply per job, ``correlation_id`` = the job id, published after
the job's results are committed to the store and before the job is acknowledged
(see :func:`reply_body`). Without ``reply_to`` nothing is replied: the store holds
the results. A job is at-least-once: an engine that dies before its ack leaves the
job to another engine, which reads the meters again; identical readings count as
``unchanged`` in the store (no new version).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kombu.entity import Queue

from adapters.amqp.connection import make_connection
from adapters.amqp.publisher import ConfirmingPublisher, Outgoing
from cim_schemas.errors import AmihubError
from hub.headend import ControlRequest
from hub.settings import AmqpSettings, HesSettings

CONTENT_TYPE = "application/json"


def jobs_queue(hes: HesSettings, amqp: AmqpSettings) -> Queue:
    """The durable work queue of head-end jobs (default exchange, routing key = its name)."""
    args: dict[str, Any] = {"x-queue-type": "quorum"} if amqp.quorum else {}
    return Queue(hes.jobs_queue, durable=True, queue_arguments=args)


def chunks(items: Sequence[str], size: int) -> list[tuple[str, ...]]:
    return [tuple(items[i : i + size]) for i in range(0, len(items), size)]


def read_job(
    job_id: str,
    meters: Iterable[str],
    start: datetime,
    end: datetime,
    *,
    registers: Sequence[str] | None = None,
    events: bool = False,
    utility: str | None = None,
    types: Iterable[str] | None = None,
    events_in_window: bool = False,
    profile_channels: Sequence[str] | None = None,
) -> dict[str, Any]:
    job: dict[str, Any] = {
        "kind": "read",
        "job": job_id,
        "meters": list(meters),
        "start": start.isoformat(),
        "end": end.isoformat(),
        "registers": None if registers is None else list(registers),
        "events": events,
        "utility": utility,
    }
    if types is not None:
        job["types"] = sorted(types)
    if events_in_window:
        job["events_in_window"] = True
    if profile_channels is not None:
        job["profile_channels"] = list(profile_channels)
    return job


def control_job(request: ControlRequest) -> dict[str, Any]:
    return {"kind": "control", **request.to_json()}


def control_request(job: dict[str, Any]) -> ControlRequest:
    return ControlRequest.from_json(job)


def reply_body(
    job: str,
    kind: str,
    state: str,
    engine: str,
    meters: list[dict[str, Any]],
    stats: dict[str, int] | None = None,
    attempts: int = 1,
    *,
    redelivered: bool = False,
) -> bytes:
    """A job's reply: ``state`` succeeded | partial | failed, one entry per meter
    (``mrid``, ``outcome``, ``error``, ``readings``, ``missing``), the store's counts."""
    return json.dumps(
        {
            "job": job,
            "kind": kind,
            "state": state,
            "engine": engine,
            "attempts": attempts,
            "redelivered": redelivered,
            "meters": meters,
            "stats": stats or {},
        }
    ).encode()


@dataclass
class JobDispatcher:
    """Publishes head-end jobs (publisher confirms) and collects their replies."""

    hes: HesSettings
    amqp: AmqpSettings
    name: str = "hes-dispatch"

    def __post_init__(self) -> None:
        self.queue = jobs_queue(self.hes, self.amqp)
        self.publisher = ConfirmingPublisher(self.amqp, name=self.name)
        self._declared = False

    def declare(self) -> None:
        if self._declared:
            return
        with make_connection(self.amqp, self.name) as connection, connection.channel() as ch:
            self.queue(ch).declare()
        self._declared = True

    def publish(self, jobs: Sequence[dict[str, Any]], reply_to: str | None = None) -> list[str]:
        """Publish jobs (each acknowledged by the broker); returns their ids."""
        self.declare()
        items = [
            Outgoing(
                body=json.dumps(job).encode(),
                routing_key=self.hes.jobs_queue,
                content_type=CONTENT_TYPE,
                message_id=str(job["job"]),
                correlation_id=str(job["job"]),
                type=f"hes.{job['kind']}",
                reply_to=reply_to,
                mandatory=True,
            )
            for job in jobs
        ]
        failures = self.publisher.publish(items)
        if failures:
            first = next(iter(failures.values()))
            raise AmihubError(f"{len(failures)} head-end job(s) not published: {first}")
        return [str(job["job"]) for job in jobs]

    def publish_reads(
        self,
        meters: Sequence[str],
        start: datetime,
        end: datetime,
        *,
        reply_to: str | None = None,
        registers: Sequence[str] | None = None,
        events: bool = False,
        utility: str | None = None,
        job_meters: int | None = None,
        prefix: str | None = None,
        types: Iterable[str] | None = None,
        events_in_window: bool = False,
        profile_channels: Sequence[str] | None = None,
    ) -> list[str]:
        """Split ``meters`` into jobs of ``job_meters`` (``[hes] job_meters``) and publish."""
        prefix = prefix or f"read-{uuid.uuid4().hex[:12]}"
        jobs = [
            read_job(
                f"{prefix}-{n}",
                part,
                start,
                end,
                registers=registers,
                events=events,
                utility=utility,
                types=types,
                events_in_window=events_in_window,
                profile_channels=profile_channels,
            )
            for n, part in enumerate(chunks(meters, job_meters or self.hes.job_meters), 1)
        ]
        return self.publish(jobs, reply_to)

    def read(
        self,
        meters: Sequence[str],
        start: datetime,
        end: datetime,
        *,
        events: bool = False,
        utility: str | None = None,
        timeout: float | None = None,
        types: Iterable[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Read through the engines and wait for every job's reply (an exclusive reply queue
        of this call). The readings are in the store when this returns."""
        with make_connection(self.amqp, f"{self.name}-replies") as connection:
            channel = connection.channel()
            reply = Queue(f"amihub.hes.reply.{uuid.uuid4().hex}", exclusive=True, auto_delete=True)
            reply(channel).declare()
            ids = self.publish_reads(
                meters,
                start,
                end,
                reply_to=reply.name,
                events=events,
                utility=utility,
                types=types,
                events_in_window=True,
            )
            return collect(connection, reply.name, ids, timeout or self.hes.job_timeout)

    def close(self) -> None:
        self.publisher.close()


def collect(connection: Any, queue: str, job_ids: Sequence[str], timeout: float) -> list[dict]:  # type: ignore[type-arg]
    """Wait for one reply per job id on ``queue`` (duplicates of redelivered jobs are
    dropped); raises TimeoutError with the ids still missing."""
    waiting = set(job_ids)
    got: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    with connection.channel() as channel:
        while waiting:
            message = channel.basic_get(queue, no_ack=True)
            if message is None:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no reply for {len(waiting)} job(s): {sorted(waiting)[:5]}")
                time.sleep(0.05)
                continue
            body = json.loads(message.body)
            job = str(body.get("job"))
            if job in waiting:
                waiting.discard(job)
                got[job] = body
    return [got[j] for j in job_ids]
