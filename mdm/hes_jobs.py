"""Head-end jobs in the store: control jobs and read schedules, with a lease.

The job table is the source of truth for scheduling (docs/controls.md, "Job table").
A job is written in the transaction that accepts its request, so a rolled-back
request never runs; a cancel is a state change in the cancel's transaction. A
scheduler *claims* due jobs (state ``running``, ``claimed_by``, ``lease_until``) in
a transaction of its own; rows are locked with ``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, so two schedulers on one store never claim one job, and a job whose
lease expired (its process died) is claimable again.

States::

    control: scheduled -> running -> succeeded | partial | failed
             scheduled -> cancelled;  running (lease expired) -> running (taken over)
    read:    active -> running -> active (next run) | finished
             active | running -> cancelled   (a run in progress completes, no further runs)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Final, Protocol


class JobKind(StrEnum):
    CONTROL = "control"  # one EndDeviceControl (hub.headend.ControlRequest)
    READ = "read"  # a MeterReadSchedule (future or recurring)


SCHEDULED: Final = "scheduled"
ACTIVE: Final = "active"
RUNNING: Final = "running"
SUCCEEDED: Final = "succeeded"
PARTIAL: Final = "partial"
FAILED: Final = "failed"
FINISHED: Final = "finished"
CANCELLED: Final = "cancelled"
#: ``spec["source"]`` of a read schedule written from ``[[hes.read_schedules]]`` (the
#: configuration owns it: changed or cancelled when the file changes, not through CIM)
CONFIGURED: Final = "configuration"
#: waiting for their due time (claimable once due)
WAITING: Final = frozenset({SCHEDULED, ACTIVE})
#: states a cancel may leave, per kind
CANCELLABLE: Final = {
    JobKind.CONTROL: frozenset({SCHEDULED}),
    JobKind.READ: frozenset({ACTIVE, RUNNING}),
}
#: the transitions of the table (checked by the repositories' conditional updates)
TRANSITIONS: Final[dict[str, frozenset[str]]] = {
    SCHEDULED: frozenset({RUNNING, CANCELLED}),
    ACTIVE: frozenset({RUNNING, CANCELLED}),
    RUNNING: frozenset({RUNNING, ACTIVE, SUCCEEDED, PARTIAL, FAILED, FINISHED, CANCELLED}),
    SUCCEEDED: frozenset(),
    PARTIAL: frozenset(),
    FAILED: frozenset(),
    FINISHED: frozenset(),
    CANCELLED: frozenset(),
}


@dataclass(frozen=True)
class HeadEndJob:
    """One row of the job table. ``spec`` is JSON: a control job's
    ``ControlRequest.to_json()``, a read schedule's targets, types and timing."""

    utility_id: int
    kind: JobKind
    mrid: str  # the EndDeviceControl mRID / the TimeSchedule mRID
    spec: dict[str, Any]
    targets: tuple[str, ...]  # meter mRIDs
    due_at: datetime  # when it is next due
    created_at: datetime
    state: str = SCHEDULED
    control_type: str | None = None
    message_id: str | None = None  # MessageID of the request that created it
    start_at: datetime | None = None
    end_at: datetime | None = None  # read schedules: no run after this
    recurrence_seconds: int | None = None
    recurrence_pattern: str | None = None
    id: int | None = None
    runs: int = 0
    attempts: int = 0  # claims of the current run
    claimed_by: str | None = None
    lease_until: datetime | None = None
    last_run_at: datetime | None = None
    last_outcome: str | None = None
    last_error: str | None = None
    updated_at: datetime | None = None
    finished_at: datetime | None = None


class HeadEndJobRepository(Protocol):
    """The job table (``hes_job``). Methods without their own transaction work in the
    unit of work's; :meth:`claim_due` is meant for a unit of work of its own."""

    def add(self, job: HeadEndJob) -> HeadEndJob:
        """Insert; a job with this (utility, kind, mRID) in any state: PayloadInvalid 2007
        (the caller's transaction stays usable)."""
        ...

    def get(self, utility_id: int, kind: JobKind, mrid: str) -> HeadEndJob | None: ...

    def by_id(self, job_id: int) -> HeadEndJob | None: ...

    def cancel(self, job_id: int, expected: str, at: datetime) -> bool:
        """``expected`` -> cancelled if the row is still ``expected``; False otherwise.
        The row stays locked until the caller's transaction ends."""
        ...

    def claim_due(
        self, now: datetime, owner: str, lease_until: datetime, limit: int
    ) -> list[HeadEndJob]:
        """Due waiting jobs and running jobs whose lease expired -> running, claimed by
        ``owner`` until ``lease_until``, attempts + 1. SKIP LOCKED on PostgreSQL."""
        ...

    def renew(self, job_ids: list[int], owner: str, lease_until: datetime) -> int:
        """Extend the leases ``owner`` still holds; returns how many."""
        ...

    def finish(
        self,
        job_id: int,
        state: str,
        at: datetime,
        *,
        owner: str | None = None,
        outcome: str | None = None,
        error: str | None = None,
        due_at: datetime | None = None,
    ) -> bool:
        """running -> ``state`` (a read schedule's next run: ``active`` with ``due_at``);
        with ``owner``, only while that owner holds the lease. False: not running (or not
        ours): nothing changed."""
        ...

    def redefine(self, job: HeadEndJob, *, expected: datetime, at: datetime) -> bool:
        """A read schedule's new definition: the row ``job.id`` takes ``job``'s state,
        spec, targets, timing and ``due_at``, with runs and attempts at 0 and no lease (a
        run in progress completes, but its scheduler records nothing), if it was last
        changed at ``expected`` (its ``updated_at``); False: changed since, nothing done."""
        ...

    def release(self, job_id: int, owner: str, error: str, retry_at: datetime) -> bool:
        """A run that failed as a whole: back to waiting, due at ``retry_at``."""
        ...

    def list(
        self, utility_id: int | None = None, states: frozenset[str] | None = None
    ) -> list[HeadEndJob]: ...
