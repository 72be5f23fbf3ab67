"""``[[hes.read_schedules]]`` kept in step with the head-end job table.

:func:`sync_read_schedules` runs when the scheduler service starts
(:mod:`adapters.dlms.service`), in one transaction:

* an entry without a row is inserted (``active``, due at its first run from now);
* an entry whose definition changed (or that comes back after it was removed) replaces
  its row's definition: next run recomputed from now, runs counted again from 0, any
  lease dropped (a run in progress completes; its scheduler records nothing);
* an unchanged entry leaves its row alone (a schedule that missed runs while nothing
  ran catches them up, one per tick, as any read schedule does);
* a configured row whose entry is gone is ``cancelled`` (active or running; a run in
  progress completes).

Rows are marked ``spec["source"] = "configuration"``
(:data:`mdm.hes_jobs.CONFIGURED`); rows written through the hub (``create
MeterReadSchedule``) are never touched, and an entry named like one is refused.
Two processes starting at once write each row once: an insert that loses to the
other's is re-read (the job table's unique key), and an update only applies to the row
it read (its ``updated_at``), else it is read again.

An entry that cannot be applied (unknown utility, area or meter, a meter without a
head-end address, a name taken by a hub schedule) is a :class:`ConfigurationError`
naming the entry, and nothing is written.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final

from cim_schemas.codes.reading_type import ReadingType
from cim_schemas.errors import ConfigurationError, PayloadInvalid, StoreUnavailable
from hub.read_schedule_settings import ReadScheduleSettings
from hub.read_targets import Selection, resolve
from mdm.hes_jobs import ACTIVE, CANCELLED, CONFIGURED, FINISHED, RUNNING, HeadEndJob, JobKind
from mdm.model import Utility
from mdm.ports import UnitOfWork, UnitOfWorkFactory
from mdm.recurrence import Recurrence

log = logging.getLogger("amihub.hes.schedules")

#: re-reads of one row that another process changes under us before giving up
ATTEMPTS: Final = 5


@dataclass
class SyncReport:
    """Schedule names by what the sync did with them."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    #: entries whose end has passed before their next run: nothing to schedule
    over: list[str] = field(default_factory=list)

    def describe(self) -> str:
        parts = [
            f"{what} {', '.join(names)}"
            for what, names in (
                ("created", self.created),
                ("updated", self.updated),
                ("unchanged", self.unchanged),
                ("cancelled", self.cancelled),
                ("over", self.over),
            )
            if names
        ]
        return "; ".join(parts) or "none configured"


def is_configured(job: HeadEndJob) -> bool:
    return job.kind is JobKind.READ and job.spec.get("source") == CONFIGURED


def label(entry: ReadScheduleSettings) -> str:
    return f"[[hes.read_schedules]] {entry.name!r}"


def definition(entry: ReadScheduleSettings, utility_code: str) -> dict[str, Any]:
    """What the row was made from: compared at the next start to find changes."""
    return entry.model_dump(mode="json") | {"utility": utility_code}


def wall_clock(day: date, at: time) -> datetime:
    """Wall-clock ``at`` on ``day`` (naive: a DTSTART in the entry's zone)."""
    return datetime.combine(day, at.replace(tzinfo=None, fold=0))


def series(entry: ReadScheduleSettings, now: datetime) -> tuple[Recurrence | None, datetime]:
    """The entry's runs from the first at or after ``now`` (and ``start``), and that
    moment. DTSTART: ``at`` on ``start``'s day; without a start, on yesterday for a
    daily or longer rule, and for an hourly or shorter one today's ``at`` moved back by
    whole periods to before ``now`` (the runs keep their grid)."""
    start = entry.start_at
    not_before = now if start is None else max(now, start)
    today = not_before.astimezone(entry.zone).date()
    runs = entry.recurrence(wall_clock(today, entry.at))
    if start is not None:
        runs = entry.recurrence(wall_clock(start.astimezone(entry.zone).date(), entry.at))
    elif not runs.sub_daily:
        runs = entry.recurrence(wall_clock(today - timedelta(days=1), entry.at))
    elif runs.first_instant > not_before:
        step = timedelta(seconds=runs.nominal_seconds)
        back = -((not_before - runs.first_instant) // step)  # ceiling division
        runs = entry.recurrence(runs.first_instant - step * back)
    return runs.starting_from(not_before), not_before


def schedule_row(
    entry: ReadScheduleSettings,
    utility: Utility,
    devices: tuple[str, ...],
    now: datetime,
) -> HeadEndJob:
    """The job row an entry stands for at ``now`` (pure): due at its first run at or
    after ``now`` (and ``start``); ``finished`` when that run would be after ``end``
    (or the rule has none left)."""
    assert utility.id is not None
    end = entry.end_at
    runs, not_before = series(entry, now)
    first_at = (runs.run(0) if runs is not None else None) or not_before
    over = runs is None or (end is not None and first_at > end)
    spec: dict[str, Any] = {
        "source": CONFIGURED,
        "definition": definition(entry, utility.code),
        "utility": utility.code,
        "types": sorted({str(ReadingType.parse(t)) for t in entry.reading_types}) or None,
        "window_seconds": entry.window,
        "events": entry.events,
        "select": Selection(entry.all_meters, entry.areas, entry.meters).to_json(),
    }
    if runs is not None:
        spec["recurrence"] = runs.to_json()
    return HeadEndJob(
        utility_id=utility.id,
        kind=JobKind.READ,
        mrid=entry.name,
        spec=spec,
        targets=devices,
        due_at=first_at,
        created_at=now,
        state=FINISHED if over else ACTIVE,
        start_at=first_at,
        end_at=None if end is None else end.astimezone(UTC),
        recurrence_seconds=entry.period_seconds,
        recurrence_pattern=runs.rule if runs is not None and entry.pattern else None,
        last_outcome=f"no run left: the next would be after the end {end}" if over else None,
    )


def sync_read_schedules(
    uow_factory: UnitOfWorkFactory,
    entries: list[ReadScheduleSettings],
    *,
    default_utility: str,
    addressable: Callable[[str], bool],
    now: datetime,
) -> SyncReport:
    """Write ``entries`` to the job table (module docstring); one transaction.
    ``addressable(mrid)``: whether the head-end can reach a meter."""
    report = SyncReport()
    with uow_factory() as uow:
        wanted: set[tuple[int, str]] = set()
        for entry in sorted(entries, key=lambda e: e.name):
            code = entry.utility or default_utility
            utility = uow.utilities.get(code)
            if utility is None or utility.id is None:
                raise ConfigurationError(f"{label(entry)}: no utility {code!r} in the store")
            selection = Selection(entry.all_meters, entry.areas, entry.meters)
            resolved = resolve(uow, utility.id, selection, addressable)
            if resolved.problems:
                raise ConfigurationError(f"{label(entry)}: {'; '.join(resolved.problems)}")
            if not resolved.devices:
                log.warning("%s: no meter to read yet (resolved again at each run)", label(entry))
            wanted.add((utility.id, entry.name))
            row = schedule_row(entry, utility, tuple(resolved.devices), now)
            _apply(uow, entry, row, now, report)
        for job in uow.hes_jobs.list(states=frozenset({ACTIVE, RUNNING})):
            if not is_configured(job) or (job.utility_id, job.mrid) in wanted:
                continue
            assert job.id is not None
            if uow.hes_jobs.cancel(job.id, job.state, now):
                report.cancelled.append(job.mrid)
        uow.commit()
    log.info("configured read schedules: %s", report.describe())
    return report


def _apply(
    uow: UnitOfWork,
    entry: ReadScheduleSettings,
    row: HeadEndJob,
    now: datetime,
    report: SyncReport,
) -> None:
    for _ in range(ATTEMPTS):
        current = uow.hes_jobs.get(row.utility_id, JobKind.READ, row.mrid)
        if current is None:
            if row.state == FINISHED:
                report.over.append(row.mrid)
                return
            try:
                uow.hes_jobs.add(row)
            except PayloadInvalid:  # another process inserted it since: compare with theirs
                log.info("%s: inserted by another process meanwhile", label(entry))
                continue
            report.created.append(row.mrid)
            return
        if not is_configured(current):
            raise ConfigurationError(
                f"{label(entry)}: read schedule {row.mrid} was created through the hub "
                f"(MessageID {current.message_id}); give the configured schedule another name"
            )
        if current.spec.get("definition") == row.spec["definition"] and current.state != CANCELLED:
            report.unchanged.append(row.mrid)
            return
        assert current.id is not None
        expected = current.updated_at or current.created_at
        if uow.hes_jobs.redefine(replace(row, id=current.id), expected=expected, at=now):
            (report.over if row.state == FINISHED else report.updated).append(row.mrid)
            return
        # changed since we read it (another process's sync, a scheduler's claim): again
        log.info("%s: changed by another process meanwhile", label(entry))
    raise StoreUnavailable(f"{label(entry)}: its job row kept changing; start again")
