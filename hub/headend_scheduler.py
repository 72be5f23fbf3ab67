"""The scheduler tick: claim due head-end jobs from the job table, run them, record them.

One tick (:meth:`JobScheduler.tick`):

1. claim (own transaction): due control jobs and read schedules, and running jobs
   whose lease expired (their scheduler died), become ``running``, claimed by this
   scheduler until now + ``lease_seconds`` (``FOR UPDATE SKIP LOCKED`` on PostgreSQL:
   two schedulers never claim one job);
2. run each claimed job through the :class:`~hub.headend_jobs.JobDispatch` (in this
   process, or engines over RabbitMQ) while a thread renews the leases every third of
   ``lease_seconds``;
3. record: a control job's outcome events, outbox items and final state in one
   transaction, only while this scheduler still holds the lease
   (:meth:`hub.headend.ControlJournal.record_report`); a read schedule's next run
   (``active``, due one period later) or its end (``finished``).

A run that fails as a whole (store or broker down) puts the job back (due again after
``retry_seconds``); a job claimed more than ``max_attempts`` times for one run gives up:
a control job is reported ``failed`` on every meter, a read schedule skips that run.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Protocol

from cim_schemas.errors import AmihubError
from hub.headend import ControlReport, ControlRequest
from hub.headend_jobs import ControlRun, JobDispatch, ReadRun, failed_report
from mdm.hes_jobs import ACTIVE, FINISHED, RUNNING, HeadEndJob, JobKind
from mdm.ports import UnitOfWork, UnitOfWorkFactory
from mdm.recurrence import Recurrence

log = logging.getLogger("amihub.hes.scheduler")

QUARTER = timedelta(minutes=15)


class TargetSelector(Protocol):
    """The meters of a read schedule's run (:class:`hub.read_targets.ConfiguredTargets`:
    a configured schedule's selection resolved at each run)."""

    def __call__(self, uow: UnitOfWork, job: HeadEndJob) -> tuple[str, ...]: ...


class JobRecorder(Protocol):
    """Where control outcomes go (:class:`hub.headend.ControlJournal`)."""

    def record_report(self, report: ControlReport, *, owner: str | None = None) -> object: ...


def new_owner() -> str:
    """A scheduler's name in ``claimed_by``: host, process, instance."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def floor_quarter(ts: datetime) -> datetime:
    return ts.replace(minute=ts.minute - ts.minute % 15, second=0, microsecond=0)


def recurrence_of(job: HeadEndJob) -> Recurrence | None:
    """A read schedule's runs (:mod:`mdm.recurrence`; None: it runs once, at its start).
    Rows written before the recurrence was kept in ``spec["recurrence"]`` are read as
    their pattern or period from ``start_at``, in the zone of their ``wall_clock``."""
    stored = job.spec.get("recurrence")
    if isinstance(stored, dict):
        return Recurrence.from_json(stored)
    if job.start_at is None or not job.recurrence_seconds:
        return None
    wall = job.spec.get("wall_clock")
    zone = str(wall["zone"]) if isinstance(wall, dict) else "UTC"
    if job.recurrence_pattern:
        return Recurrence.parse(job.recurrence_pattern, job.start_at, zone)
    return Recurrence.every(job.recurrence_seconds, job.start_at, zone)


def run_time(job: HeadEndJob, run: int | None = None) -> datetime | None:
    """When run number ``run`` (default: the current one, ``job.runs``) of a read
    schedule is due (None: the recurrence has no such run). ``due_at`` may be later
    (a retry)."""
    assert job.start_at is not None
    n = job.runs if run is None else run
    runs = recurrence_of(job)
    if runs is None:
        return job.start_at if n == 0 else None
    return runs.run(n)


def current_run(job: HeadEndJob) -> datetime:
    """The run in hand (its due time if the recurrence has none left: a row of an
    older definition)."""
    at = run_time(job)
    return at if at is not None else job.due_at


def read_window(job: HeadEndJob) -> tuple[datetime, datetime]:
    """The window (start, end] of the current run: ``window_seconds`` (the period, or
    24 hours) up to its run time, in quarter-hours."""
    end = floor_quarter(current_run(job))
    return end - timedelta(seconds=int(job.spec["window_seconds"])), end


def next_due(job: HeadEndJob) -> datetime | None:
    """The run after the current one, or None when the schedule is over."""
    following = run_time(job, job.runs + 1)
    if following is None or (job.end_at is not None and following > job.end_at):
        return None
    return following


class _Leases:
    """Renews the leases of the jobs in hand while they run (a thread)."""

    def __init__(self, scheduler: JobScheduler, ids: Sequence[int]) -> None:
        self.scheduler = scheduler
        self.ids = [i for i in ids]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="hes-leases", daemon=True)

    def __enter__(self) -> _Leases:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)

    def _loop(self) -> None:
        s = self.scheduler
        while not self.stop.wait(s.lease_seconds / 3):
            try:
                with s.uow_factory() as uow:
                    uow.hes_jobs.renew(self.ids, s.owner, s.clock() + s.lease)
                    uow.commit()
            except AmihubError:
                log.exception("job leases not renewed (retried)")


class JobScheduler:
    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        recorder: JobRecorder,
        runner: JobDispatch,
        *,
        clock: Callable[[], datetime],
        owner: str | None = None,
        lease_seconds: float = 60.0,
        max_attempts: int = 3,
        retry_seconds: float = 60.0,
        claim_limit: int = 10,
        targets: TargetSelector | None = None,
    ) -> None:
        self.uow_factory = uow_factory
        self.recorder = recorder
        self.runner = runner
        self.clock = clock
        self.owner = owner or new_owner()
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.retry_seconds = retry_seconds
        self.claim_limit = claim_limit
        #: None: a read schedule reads the meters of its row
        self.targets = targets

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.lease_seconds)

    def claim(self) -> list[HeadEndJob]:
        now = self.clock()
        with self.uow_factory() as uow:
            claimed = uow.hes_jobs.claim_due(now, self.owner, now + self.lease, self.claim_limit)
            uow.commit()
        return claimed

    def tick(self) -> list[ControlReport]:
        """Claim the due jobs and run them; returns the control jobs' reports."""
        claimed = self.claim()
        if not claimed:
            return []
        reports: list[ControlReport] = []
        with _Leases(self, [j.id for j in claimed if j.id is not None]):
            for job in claimed:
                try:
                    if job.kind is JobKind.CONTROL:
                        report = self._control(job)
                        if report is not None:
                            reports.append(report)
                    else:
                        self._read(job)
                except AmihubError as exc:
                    self._release(job, f"{type(exc).__name__}: {exc}")
        return reports

    # -- control jobs ------------------------------------------------------------------------

    def _control(self, job: HeadEndJob) -> ControlReport | None:
        request = ControlRequest.from_json(job.spec)
        if job.attempts > self.max_attempts:
            detail = f"not run: gave up after {self.max_attempts} attempts ({job.last_error})"
            report = failed_report(request, detail, self.clock())
            self.recorder.record_report(report, owner=self.owner)
            return report
        if job.attempts > 1:
            log.warning("control job %s: attempt %d (taken over)", job.mrid, job.attempts)
        run: ControlRun = self.runner.control(request)
        if not run.recorded:
            self.recorder.record_report(run.report, owner=self.owner)
            return run.report
        # an engine ran it and recorded the outcome with the job's state; if the row is
        # still ours the engine gave up without recording: record the failure here
        with self.uow_factory() as uow:
            row = uow.hes_jobs.by_id(job.id) if job.id is not None else None
        if row is not None and row.state == RUNNING and row.claimed_by == self.owner:
            errors = "; ".join(sorted({r.detail for r in run.report.results if r.detail}))
            report = failed_report(request, f"engine: {errors or run.report.state}", self.clock())
            self.recorder.record_report(report, owner=self.owner)
            return report
        return run.report

    # -- read schedules ----------------------------------------------------------------------

    def _read(self, job: HeadEndJob) -> None:
        assert job.id is not None
        following = next_due(job)
        state, due = (ACTIVE, following) if following is not None else (FINISHED, None)
        if job.attempts > self.max_attempts:
            outcome = (
                f"run of {current_run(job).isoformat()} skipped after {self.max_attempts} attempts"
            )
            error = job.last_error
        else:
            start, end = read_window(job)
            types = job.spec.get("types")
            devices = job.targets
            if self.targets is not None:
                with self.uow_factory() as uow:
                    devices = self.targets(uow, job)
            done = self.runner.read(
                ReadRun(
                    job.mrid,
                    devices,
                    start,
                    end,
                    str(job.spec["utility"]),
                    frozenset(types) if types else None,
                    events=bool(job.spec.get("events", True)),
                )
            )
            outcome = f"run of {current_run(job).isoformat()}: {done.describe()}"
            error = None
        with self.uow_factory() as uow:
            if uow.hes_jobs.finish(
                job.id,
                state,
                self.clock(),
                owner=self.owner,
                outcome=outcome,
                error=error,
                due_at=due,
            ):
                uow.commit()
            else:
                log.info("read schedule %s: cancelled or taken over during its run", job.mrid)
        log.info("read schedule %s: %s; next %s", job.mrid, outcome, due or "none")

    def _release(self, job: HeadEndJob, error: str) -> None:
        log.warning("head-end job %s failed on attempt %d: %s", job.mrid, job.attempts, error)
        if job.id is None:
            return
        try:
            with self.uow_factory() as uow:
                uow.hes_jobs.release(
                    job.id, self.owner, error, self.clock() + timedelta(seconds=self.retry_seconds)
                )
                uow.commit()
        except AmihubError:
            log.exception("head-end job %s not released: its lease expires", job.mrid)
