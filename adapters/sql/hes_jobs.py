"""The head-end job table (``hes_job``): see mdm/hes_jobs.py for the states and the lease.

Claims: on PostgreSQL the due rows are selected ``FOR UPDATE SKIP LOCKED`` (a row
another scheduler is claiming, or a cancel's open transaction holds, is skipped),
then updated with a condition that repeats the due test; on SQLite (one writer at a
time) the conditional UPDATE alone decides.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Row
from sqlalchemy.sql.elements import ColumnElement

from adapters.sql import tables as t
from adapters.sql.errors import already_exists, guarded, is_unique_violation
from adapters.sql.registry import _Repo
from mdm.hes_jobs import RUNNING, WAITING, HeadEndJob, JobKind

_J = t.hes_job


def _job(r: Row[Any]) -> HeadEndJob:
    return HeadEndJob(
        id=int(r.id),
        utility_id=int(r.utility_id),
        kind=JobKind(r.kind),
        mrid=r.mrid,
        state=r.state,
        control_type=r.control_type,
        targets=tuple(r.targets or ()),
        spec=dict(r.spec or {}),
        message_id=r.message_id,
        start_at=r.start_at,
        end_at=r.end_at,
        recurrence_seconds=r.recurrence_seconds,
        recurrence_pattern=r.recurrence_pattern,
        due_at=r.due_at,
        runs=int(r.runs),
        attempts=int(r.attempts),
        claimed_by=r.claimed_by,
        lease_until=r.lease_until,
        last_run_at=r.last_run_at,
        last_outcome=r.last_outcome,
        last_error=r.last_error,
        created_at=r.created_at,
        updated_at=r.updated_at,
        finished_at=r.finished_at,
    )


def _due(now: datetime) -> ColumnElement[bool]:
    return or_(
        and_(_J.c.state.in_(sorted(WAITING)), _J.c.due_at <= now),
        and_(_J.c.state == RUNNING, _J.c.lease_until < now),
    )


class SqlHeadEndJobRepository(_Repo):
    @guarded
    def add(self, job: HeadEndJob) -> HeadEndJob:
        values = {
            "utility_id": job.utility_id,
            "kind": job.kind.value,
            "mrid": job.mrid,
            "state": job.state,
            "control_type": job.control_type,
            "targets": list(job.targets),
            "spec": job.spec,
            "message_id": job.message_id,
            "start_at": job.start_at,
            "end_at": job.end_at,
            "recurrence_seconds": job.recurrence_seconds,
            "recurrence_pattern": job.recurrence_pattern,
            "due_at": job.due_at,
            "runs": 0,
            "attempts": 0,
            "created_at": job.created_at,
            "updated_at": job.created_at,
        }
        # a savepoint: a taken mRID is an item error, the request's transaction goes on
        savepoint = self._conn.begin_nested()
        try:
            row = self._conn.execute(insert(_J).values(values).returning(_J)).one()
        except sa_exc.IntegrityError as exc:
            savepoint.rollback()
            if is_unique_violation(exc):
                raise already_exists(
                    f"{job.kind.value} job {job.mrid} exists (the mRID of a job, in any "
                    "state, is not reused)"
                ) from None
            raise
        savepoint.commit()
        return _job(row)

    @guarded
    def get(self, utility_id: int, kind: JobKind, mrid: str) -> HeadEndJob | None:
        row = self._conn.execute(
            select(_J).where(
                _J.c.utility_id == utility_id, _J.c.kind == kind.value, _J.c.mrid == mrid
            )
        ).one_or_none()
        return None if row is None else _job(row)

    @guarded
    def by_id(self, job_id: int) -> HeadEndJob | None:
        row = self._conn.execute(select(_J).where(_J.c.id == job_id)).one_or_none()
        return None if row is None else _job(row)

    @guarded
    def cancel(self, job_id: int, expected: str, at: datetime) -> bool:
        done = self._conn.execute(
            update(_J)
            .where(_J.c.id == job_id, _J.c.state == expected)
            .values(state="cancelled", updated_at=at, finished_at=at)
        )
        return done.rowcount == 1

    @guarded
    def claim_due(
        self, now: datetime, owner: str, lease_until: datetime, limit: int
    ) -> list[HeadEndJob]:
        candidates = select(_J.c.id).where(_due(now)).order_by(_J.c.due_at, _J.c.id).limit(limit)
        if self._conn.dialect.name == "postgresql":
            candidates = candidates.with_for_update(skip_locked=True)
        ids = [int(i) for i in self._conn.execute(candidates).scalars()]
        if not ids:
            return []
        rows = self._conn.execute(
            update(_J)
            .where(_J.c.id.in_(ids), _due(now))  # repeated: another claimer may have won
            .values(
                state=RUNNING,
                claimed_by=owner,
                lease_until=lease_until,
                attempts=_J.c.attempts + 1,
                updated_at=now,
            )
            .returning(_J)
        ).all()
        return sorted((_job(r) for r in rows), key=lambda j: (j.due_at, j.id or 0))

    @guarded
    def renew(self, job_ids: list[int], owner: str, lease_until: datetime) -> int:
        if not job_ids:
            return 0
        done = self._conn.execute(
            update(_J)
            .where(_J.c.id.in_(job_ids), _J.c.claimed_by == owner, _J.c.state == RUNNING)
            .values(lease_until=lease_until)
        )
        return int(done.rowcount)

    @guarded
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
        where = [_J.c.id == job_id, _J.c.state == RUNNING]
        if owner is not None:
            where.append(_J.c.claimed_by == owner)
        values: dict[str, Any] = {
            "state": state,
            "claimed_by": None,
            "lease_until": None,
            "runs": _J.c.runs + 1,
            "attempts": 0,
            "last_run_at": at,
            "last_outcome": outcome,
            "last_error": error,
            "updated_at": at,
        }
        if due_at is not None:
            values["due_at"] = due_at
        if state not in WAITING:
            values["finished_at"] = at
        done = self._conn.execute(update(_J).where(*where).values(values))
        return done.rowcount == 1

    @guarded
    def redefine(self, job: HeadEndJob, *, expected: datetime, at: datetime) -> bool:
        assert job.id is not None
        done = self._conn.execute(
            update(_J)
            .where(_J.c.id == job.id, _J.c.updated_at == expected)
            .values(
                state=job.state,
                spec=job.spec,
                targets=list(job.targets),
                message_id=job.message_id,
                start_at=job.start_at,
                end_at=job.end_at,
                recurrence_seconds=job.recurrence_seconds,
                recurrence_pattern=job.recurrence_pattern,
                due_at=job.due_at,
                runs=0,
                attempts=0,
                claimed_by=None,
                lease_until=None,
                last_error=None,
                last_outcome=job.last_outcome,
                updated_at=at,
                finished_at=None if job.state in WAITING else at,
            )
        )
        return done.rowcount == 1

    @guarded
    def release(self, job_id: int, owner: str, error: str, retry_at: datetime) -> bool:
        job = self.by_id(job_id)
        if job is None:
            return False
        waiting = "scheduled" if job.kind is JobKind.CONTROL else "active"
        done = self._conn.execute(
            update(_J)
            .where(_J.c.id == job_id, _J.c.state == RUNNING, _J.c.claimed_by == owner)
            .values(
                state=waiting,
                claimed_by=None,
                lease_until=None,
                due_at=retry_at,
                last_error=error[:2000],
                updated_at=retry_at,
            )
        )
        return done.rowcount == 1

    @guarded
    def list(
        self, utility_id: int | None = None, states: frozenset[str] | None = None
    ) -> list[HeadEndJob]:
        stmt = select(_J).order_by(_J.c.id)
        if utility_id is not None:
            stmt = stmt.where(_J.c.utility_id == utility_id)
        if states is not None:
            stmt = stmt.where(_J.c.state.in_(sorted(states)))
        return [_job(r) for r in self._conn.execute(stmt)]
